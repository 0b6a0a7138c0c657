// The playground: POST /predict with stream: true, the Server-Sent Events read off the response
// body (EventSource cannot POST), each token appended as it comes.
const $ = (id) => document.getElementById(id);
let running = null;

fetch('/health')
  .then((r) => r.json())
  .then((h) => {
    $('model').textContent = `${h.model}${h.adapter ? ` + adapter ${h.adapter}${h.adapter_merged ? ' (merged)' : ''}` : ' (no adapter)'} · ${h.status}${h.backend ? ` · ${h.backend}` : ''}`;
    if (!h.adapter) $('adapter').value = 'none';
  })
  .catch(() => ($('model').textContent = 'server not reachable'));

function request() {
  const num = (id) => ($(id).value === '' ? undefined : Number($(id).value));
  const r = {
    prompt: $('prompt').value,
    do_sample: $('do_sample').checked,
    temperature: num('temperature'),
    top_p: num('top_p'),
    top_k: num('top_k'),
    repetition_penalty: num('repetition_penalty'),
    max_new_tokens: num('max_new_tokens'),
    seed: num('seed'),
    stream: true,
  };
  if ($('adapter').value === 'none') r.adapter = null;
  return r;
}

function status(text, error = false) {
  $('status').textContent = text;
  $('status').className = error ? 'error' : '';
}

async function generate() {
  const out = $('output');
  out.textContent = '';
  out.dataset.events = '0';
  status('generating…');
  const ac = new AbortController();
  running = ac;
  $('generate').disabled = true;
  $('stop').disabled = false;
  try {
    const headers = { 'content-type': 'application/json', accept: 'text/event-stream' };
    if ($('api_key').value) headers.authorization = `Bearer ${$('api_key').value}`;
    const res = await fetch('/predict', { method: 'POST', headers, body: JSON.stringify({ request: request() }), signal: ac.signal });
    if (!(res.headers.get('content-type') || '').includes('text/event-stream')) {
      const body = await res.json().catch(() => ({}));
      status(`${res.status}: ${(body.errors || [res.statusText]).join('; ')}`, true);
      return;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!frame.startsWith('data: ')) continue;
        const ev = JSON.parse(frame.slice(6));
        out.dataset.events = String(Number(out.dataset.events) + 1);
        if (typeof ev.token === 'string') out.textContent += ev.token;
        else if (ev.done) {
          const t = ev.timings || {};
          status(`${ev.usage.completion_tokens} tokens · ${ev.stop_reason} · first token ${Math.round(t.ttftMs)} ms · ${Math.round(t.decodeTokensPerSecond)} tok/s`);
          out.dataset.done = 'true';
        } else if (ev.success === false) status(ev.errors.join('; '), true);
      }
    }
  } catch (e) {
    status(ac.signal.aborted ? 'stopped' : String(e), !ac.signal.aborted);
  } finally {
    running = null;
    $('generate').disabled = false;
    $('stop').disabled = true;
  }
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!running) generate();
});
$('stop').addEventListener('click', () => running && running.abort());
