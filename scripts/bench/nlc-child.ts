// The node-llama-cpp baseline in its own process (see measureNodeLlamaCppApart): options as JSON
// in argv[2], the result as JSON on the last line of stdout.
import { measureNodeLlamaCpp } from './baselines.ts';

const result = await measureNodeLlamaCpp(JSON.parse(process.argv[2] ?? '{}')).catch((e: Error) => ({
  skipped: e.message,
}));
console.log(JSON.stringify(result));
