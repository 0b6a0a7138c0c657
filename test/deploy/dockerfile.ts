// The Dockerfile as the tests read it: its stages, each stage's instructions, ENV and USER, parsed by
// dockerfile-ast (the parser of the Docker language server that VS Code uses).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { root } from '../helpers.ts';

export const dockerfilePath = path.join(root, 'Dockerfile');
export const dockerfileText = () => readFileSync(dockerfilePath, 'utf8');

export interface Stage {
  name: string;
  /** The image it starts from, as written (a stage name or an image reference). */
  from: string;
  instructions: Instruction[];
}

/** The build stages in order, each with the instructions up to the next FROM. */
export function stages(text = dockerfileText()): Stage[] {
  const out: Stage[] = [];
  for (const ins of DockerfileParser.parse(text).getInstructions()) {
    const keyword = ins.getKeyword();
    if (keyword === 'FROM') {
      const args = ins.getArguments().map((a) => a.getValue());
      const as = args.findIndex((a) => a.toUpperCase() === 'AS');
      out.push({ name: as >= 0 ? args[as + 1]! : `#${out.length}`, from: args[0]!, instructions: [] });
    } else if (out.length > 0) {
      out[out.length - 1]!.instructions.push(ins);
    }
  }
  return out;
}

export function stage(name: string, text?: string): Stage {
  const s = stages(text).find((x) => x.name === name);
  if (!s) throw new Error(`the Dockerfile has no stage '${name}'`);
  return s;
}

export const keywordOf = (s: Stage, keyword: string) => s.instructions.filter((i) => i.getKeyword() === keyword);

/** A stage's ENV, later instructions winning. */
export function envOf(s: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const ins of keywordOf(s, 'ENV')) {
    // biome-ignore lint/suspicious/noExplicitAny: dockerfile-ast's Env has getProperties, Instruction does not declare it
    for (const p of (ins as any).getProperties()) env[p.getName()] = p.getValue();
  }
  return env;
}

/** The text after the keyword and its flags, continuation lines joined. */
export const argsOf = (ins: Instruction) => (ins.getArgumentsContent() ?? '').replace(/\\\n\s*/g, ' ').trim();

/** COPY instructions as { from: stage or null for the build context, sources, destination }. */
export function copiesOf(s: Stage): { from: string | null; sources: string[]; dest: string }[] {
  return keywordOf(s, 'COPY').map((ins) => {
    // biome-ignore lint/suspicious/noExplicitAny: dockerfile-ast's Copy has getFlags, Instruction does not declare it
    const flags: { getName(): string; getValue(): string }[] = (ins as any).getFlags();
    const from = flags.find((f) => f.getName() === 'from')?.getValue() ?? null;
    const paths = ins.getArguments().map((a) => a.getValue());
    return { from, sources: paths.slice(0, -1), dest: paths[paths.length - 1]! };
  });
}

/** The working directory an instruction at index `i` runs in (WORKDIR before it, absolute). */
export function workdirAt(s: Stage, ins: Instruction): string {
  let dir = '/';
  for (const x of s.instructions) {
    if (x === ins) break;
    if (x.getKeyword() === 'WORKDIR') dir = path.posix.resolve(dir, argsOf(x));
  }
  return dir;
}

/** An exec-form instruction's argv (JSON array), or null when it is in shell form. */
export function execForm(ins: Instruction): string[] | null {
  const text = argsOf(ins).replace(/^(--\S+\s+)+/, '');
  const json = text.startsWith('CMD ') ? text.slice(4) : text;
  try {
    const argv = JSON.parse(json);
    return Array.isArray(argv) && argv.every((a) => typeof a === 'string') ? argv : null;
  } catch {
    return null;
  }
}
