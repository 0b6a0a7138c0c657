// A stand-in for the Hugging Face Hub on a loopback port (the real one cannot be reached here),
// serving one model repo from a local folder with the Hub's own protocol, as huggingface_hub and
// @huggingface/hub use it:
//   GET  /api/models/{repo}/tree/{rev}?recursive=..  the file list (oid, size; lfs {oid, size} for LFS files)
//   POST /api/models/{repo}/paths-info/{rev}        {paths, expand}: the same, with lastCommit
//   GET  /{repo}/resolve/{rev}/{path}                the file; Range answered with 206 + Content-Range;
//                                                    ETag (the LFS sha256, else the git blob sha1), X-Repo-Commit
// An unknown repo or file is a 404 with X-Error-Code (RepoNotFound, EntryNotFound), a missing or
// wrong token on a gated repo a 401, as the Hub answers. Any other request is recorded as
// unexpected and answered 400, so a client that strays from the protocol fails its test.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface FakeHub {
  url: string;
  /** Requests that were not part of the protocol above. */
  unexpected: string[];
  /** Every request line, in order. */
  requests: string[];
  close(): Promise<void>;
}

interface RepoFile {
  path: string;
  data: Buffer;
  oid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

export async function startFakeHub(o: { repo: string; dir: string; commit: string; token?: string }): Promise<FakeHub> {
  const files: RepoFile[] = readdirSync(o.dir).map((name) => {
    const data = readFileSync(path.join(o.dir, name));
    const oid = createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    const lfs = name.endsWith('.safetensors')
      ? { oid: createHash('sha256').update(data).digest('hex'), size: data.length, pointerSize: 134 }
      : undefined;
    return { path: name, data, oid, ...(lfs ? { lfs } : {}) };
  });
  const entry = (f: RepoFile, expand: boolean) => ({
    type: 'file',
    oid: f.oid,
    size: f.lfs ? f.lfs.pointerSize : f.data.length,
    path: f.path,
    ...(f.lfs ? { lfs: f.lfs } : {}),
    ...(expand ? { lastCommit: { id: o.commit, title: 'Upload', date: '2026-11-01T00:00:00.000Z' } } : {}),
  });
  const unexpected: string[] = [];
  const requests: string[] = [];
  const body = (req: IncomingMessage) =>
    new Promise<string>((resolve) => {
      let s = '';
      req.on('data', (d: Buffer) => (s += d.toString()));
      req.on('end', () => resolve(s));
    });

  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://hub');
    requests.push(`${req.method} ${url.pathname}`);
    const json = (status: number, v: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(v));
    };
    const stray = () => {
      unexpected.push(`${req.method} ${req.url}`);
      json(400, { error: 'not part of the Hub protocol this fake speaks' });
    };
    const m = /^\/(?:api\/models\/)?([^/]+\/[^/]+)\/(tree|paths-info|resolve)\/([^/]+)(?:\/(.*))?$/.exec(url.pathname);
    if (!m) return stray();
    const [, repo, kind, rev, file] = m as unknown as [string, string, string, string, string | undefined];
    const isApi = url.pathname.startsWith('/api/models/');
    if ((kind === 'resolve') === isApi) return stray();
    if (repo !== o.repo) return json(404, { error: 'Repository not found' }, { 'x-error-code': 'RepoNotFound' });
    if (o.token && req.headers.authorization !== `Bearer ${o.token}`) {
      return json(401, { error: 'Access to this model is restricted: pass a token' }, { 'x-error-code': 'GatedRepo' });
    }
    if (rev !== 'main' && rev !== o.commit)
      return json(404, { error: 'Invalid rev id' }, { 'x-error-code': 'RevisionNotFound' });
    if (kind === 'tree' && req.method === 'GET')
      return json(
        200,
        files.map((f) => entry(f, url.searchParams.get('expand') === 'true')),
      );
    if (kind === 'paths-info' && req.method === 'POST') {
      let b: { paths?: unknown; expand?: unknown };
      try {
        b = JSON.parse(await body(req)) as typeof b;
      } catch {
        return stray();
      }
      if (!Array.isArray(b.paths) || !b.paths.every((p) => typeof p === 'string')) return stray();
      return json(
        200,
        files.filter((f) => (b.paths as string[]).includes(f.path)).map((f) => entry(f, b.expand === true)),
      );
    }
    if (kind === 'resolve' && (req.method === 'GET' || req.method === 'HEAD') && file) {
      const f = files.find((x) => x.path === decodeURIComponent(file));
      if (!f) return json(404, { error: 'Entry not found' }, { 'x-error-code': 'EntryNotFound' });
      const headers = {
        etag: `"${f.lfs?.oid ?? f.oid}"`,
        'x-repo-commit': o.commit,
        'accept-ranges': 'bytes',
        'content-type': 'application/octet-stream',
      };
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      if (range) {
        const start = Number(range[1]);
        const end = range[2] ? Math.min(Number(range[2]), f.data.length - 1) : f.data.length - 1;
        res.writeHead(206, {
          ...headers,
          'content-range': `bytes ${start}-${end}/${f.data.length}`,
          'content-length': String(end - start + 1),
        });
        return res.end(req.method === 'HEAD' ? undefined : f.data.subarray(start, end + 1));
      }
      res.writeHead(200, { ...headers, 'content-length': String(f.data.length) });
      return res.end(req.method === 'HEAD' ? undefined : f.data);
    }
    return stray();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    unexpected,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
