// The command line: `generate` (one prompt, straight through the engine) and `serve`.
import { Command } from 'commander';
import { intArg, numArg, positiveArg } from './args.ts';
import { HTTP_DEFAULTS } from '../cml/config.ts';
import { ENGINE_DEFAULTS, EngineError, SERVE_DEFAULTS } from '../engine/index.ts';
import { runConvertLora, runConvertModel, runMergeLora } from './convert.ts';
import { runDeploy } from './deploy.ts';
import { runGenerate } from './generate.ts';
import { runPredict, runServe } from './serve.ts';

const program = new Command()
  .name('cml-lora-serve')
  .description('Serve a GGUF base model + LoRA adapter on llama.cpp, speaking the CML model contract')
  .showHelpAfterError();

program
  .command('generate')
  .description('generate a continuation of one prompt')
  .requiredOption('--model <file.gguf>', 'GGUF base model')
  .option('--adapter <file.gguf>', 'GGUF LoRA adapter')
  .option('--scale <s>', 'adapter scale', numArg('--scale'), 1)
  .requiredOption('--prompt <text>', 'prompt text')
  .option('--max-tokens <n>', 'maximum new tokens', intArg('--max-tokens', 1), 60)
  .option('--greedy', 'greedy decoding (no sampling)', false)
  .option('--temperature <t>', 'sampling temperature', numArg('--temperature'))
  .option('--top-k <k>', 'top-k (0 = off)', intArg('--top-k', 0))
  .option('--top-p <p>', 'top-p', numArg('--top-p'))
  .option('--min-p <p>', 'min-p', numArg('--min-p'))
  .option('--repetition-penalty <r>', 'repetition penalty (Hugging Face semantics)', numArg('--repetition-penalty'))
  .option('--seed <n>', 'sampling seed', intArg('--seed', 0))
  .option('--stop <s...>', 'stop strings')
  .option('--logprobs <n>', 'top-n log-probabilities per token', intArg('--logprobs', 0))
  .option('--backend <b>', 'cpu | cuda | auto', 'auto')
  .option('--threads <n>', 'CPU threads', intArg('--threads', 1))
  .option('--gpu-layers <n>', 'layers on the GPU (-1 = all)', intArg('--gpu-layers', -1))
  .option('--context <n>', 'context tokens', intArg('--context', 16), ENGINE_DEFAULTS.contextSize)
  .option('--json', 'print one JSON object (last line) instead of streaming text', false)
  .action(runGenerate);

const serveOptions = (cmd: Command) =>
  cmd
    .option('--model <location>', 'base model (env FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME)')
    .option('--adapter <location>', 'adapter (env FINE_TUNING_STUDIO_ADAPTER_LOCATION / ADAPTER_LOCATION)')
    .option('--adapter-none', 'serve the base model alone')
    .option('--gen-config <json>', 'generation config (env FINE_TUNING_STUDIO_GEN_CONFIG_STRING / GEN_CONFIG_STRING)')
    .option('--models-dir <dir>', 'where org/name model ids are looked up (env MODELS_DIR)')
    .option('--slots <n>', `concurrent sequences (env SLOTS, default ${SERVE_DEFAULTS.slots})`, intArg('--slots', 1))
    .option(
      '--max-queue <n>',
      `requests waiting beyond the slots (env MAX_QUEUE, default ${SERVE_DEFAULTS.maxQueue})`,
      intArg('--max-queue', 0),
    )
    .option(
      '--context <n>',
      `context tokens per slot (env CONTEXT_SIZE, default ${SERVE_DEFAULTS.contextSize})`,
      intArg('--context', 16),
    )
    .option('--threads <n>', 'CPU threads (env THREADS)', intArg('--threads', 1))
    .option('--backend <b>', 'cpu | cuda | auto (env BACKEND)')
    .option('--no-merge', 'apply the adapter per token instead of merging it into the weights (env MERGE_ADAPTER=off)')
    .option('--no-check-tensors', 'skip the check of every weight for NaN/inf at load (env CHECK_TENSORS=off)')
    .option(
      '--no-parse-special',
      "special-token text in prompts stays text (env PARSE_SPECIAL=off; default: control tokens, as the studio's tokenizer)",
    )
    .option(
      '--chat-template <file.jinja>',
      "a Jinja chat template for /v1/chat/completions, over the GGUF's own (env CHAT_TEMPLATE)",
    )
    .option(
      '--tokenizer <t>',
      "auto: the checkpoint's tokenizer.json when the base is a Hugging Face checkpoint, else llama.cpp's | llama (env TOKENIZER)",
    )
    .option(
      '--split-mode <m>',
      'one model over several GPUs: layer (default) | row (tensor parallel) | none (env SPLIT_MODE)',
    )
    .option(
      '--main-gpu <n>',
      'the GPU for split-mode none, and for small tensors (env MAIN_GPU)',
      intArg('--main-gpu', 0),
    )
    .option('--tensor-split <shares>', "each GPU's share, e.g. 3,1 (env TENSOR_SPLIT; default: by free memory)");

serveOptions(
  program.command('serve').description('serve POST /predict, /v1/completions, /health, /metrics (= npm start)'),
)
  .option('--port <n>', `port (env CDSW_APP_PORT, else PORT; default ${SERVE_DEFAULTS.port})`, intArg('--port', 0))
  .option('--host <h>', `address (env HOST, default ${SERVE_DEFAULTS.host})`)
  .option('--api-key <key>', 'require Authorization: Bearer <key> (env API_KEY)')
  .option(
    '--headers-timeout <s>',
    `seconds a client has to send its request headers (env HEADERS_TIMEOUT, default ${HTTP_DEFAULTS.headersTimeoutS})`,
    positiveArg('--headers-timeout'),
  )
  .option(
    '--body-timeout <s>',
    `seconds a client has to send its whole request (env BODY_TIMEOUT, default ${HTTP_DEFAULTS.bodyTimeoutS})`,
    positiveArg('--body-timeout'),
  )
  .option(
    '--keep-alive-timeout <s>',
    `seconds an idle keep-alive connection stays open (env KEEP_ALIVE_TIMEOUT, default ${HTTP_DEFAULTS.keepAliveTimeoutS})`,
    positiveArg('--keep-alive-timeout'),
  )
  .option(
    '--max-connections <n>',
    `open connections at most; more are refused (env MAX_CONNECTIONS, default ${HTTP_DEFAULTS.maxConnections})`,
    intArg('--max-connections', 1),
  )
  .option(
    '--drain-timeout <s>',
    `on SIGTERM/SIGINT, seconds requests in flight may finish (env DRAIN_TIMEOUT, default ${SERVE_DEFAULTS.drainTimeoutS})`,
    positiveArg('--drain-timeout'),
  )
  .action(runServe);

program
  .command('convert-lora')
  .description('convert a PEFT LoRA adapter directory to a GGUF LoRA')
  .argument('<peft-dir>', 'directory with adapter_config.json and adapter_model.safetensors')
  .option(
    '--base <dir-or-gguf>',
    "the base model's Hugging Face directory or GGUF (default: the adapter's base_model_name_or_path)",
  )
  .requiredOption('--out <file.gguf>', 'output file')
  .option('--outtype <t>', 'f32 | f16 | bf16', 'f32')
  .action(runConvertLora);

program
  .command('convert-model')
  .description(
    'convert a Hugging Face checkpoint (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 2/3, Bloom) to a GGUF model',
  )
  .argument('<hf-dir>', 'directory with config.json, safetensors weights and the tokenizer')
  .requiredOption('--out <file.gguf>', 'output file')
  .option(
    '--outtype <t>',
    "auto (keep the checkpoint precision) | f32 | f16 | bf16 | q8_0 | q4_0 | q4_k_m | q5_k_m | q6_k (K-quants: llama.cpp's quantizer)",
    'auto',
  )
  .option('--threads <n>', 'quantizer threads (default: all cores)', intArg('--threads', 1))
  .option('--backend <b>', 'cpu | cuda | auto: whose addon quantizes (on the CPU either way)', 'auto')
  .action(runConvertModel);

program
  .command('merge-lora')
  .description("merge a GGUF LoRA into its base model's weights: one GGUF of the base's tensor types")
  .requiredOption('--model <file.gguf>', 'base model')
  .requiredOption('--adapter <file.gguf>', 'GGUF LoRA adapter')
  .requiredOption('--out <file.gguf>', 'output file')
  .option('--scale <s>', 'adapter scale (alpha/rank is applied on top, as llama.cpp does)', numArg('--scale'), 1)
  .option('--threads <n>', 'threads (default: all cores)', intArg('--threads', 1))
  .option('--backend <b>', 'cpu | cuda | auto: whose addon runs it (the merge is on the CPU)', 'auto')
  .action(runMergeLora);

serveOptions(program.command('predict').description('one prompt through the CML predict contract, printed bare'))
  .requiredOption('--prompt <text>', 'prompt text')
  .option('--request <json>', 'other request fields, as JSON (e.g. \'{"do_sample": false}\')')
  .action(runPredict);

const collect = (v: string, all: string[]) => [...all, v];
program
  .command('deploy-cml')
  .description(
    "deploy to Cloudera ML as Fine Tuning Studio does (a Model built from this checkout's predict script), or as an Application",
  )
  .option('--api-url <url>', 'CML workspace URL, scheme and host used (env CDSW_API_URL)')
  .option('--api-key <key>', 'CML API v2 key (env CDSW_APIV2_KEY)')
  .option('--project <id>', 'project id (env CDSW_PROJECT_ID)')
  .requiredOption('--name <name>', 'model (or application) name; a model of that name is reused')
  .option('--description <text>', 'description')
  .option('--model <hub-id>', 'base model (env FINE_TUNING_STUDIO_BASE_MODEL_HF_NAME)')
  .option(
    '--adapter <path>',
    'adapter location, relative to the project root (env FINE_TUNING_STUDIO_ADAPTER_LOCATION)',
  )
  .option('--gen-config <json>', 'generation config (env FINE_TUNING_STUDIO_GEN_CONFIG_STRING)')
  .option('--cpu <n>', 'vCPUs', numArg('--cpu'), 2)
  .option('--memory <gb>', 'memory in GB', numArg('--memory'), 8)
  .option('--gpus <n>', 'NVIDIA GPUs', intArg('--gpus', 0), 1)
  .option('--replicas <n>', 'replicas (each serves one request at a time)', intArg('--replicas', 1), 1)
  .option(
    '--runtime <id>',
    "runtime identifier (default: the runtime of the job named like 'Finetuning_Base_Job', as the studio does)",
  )
  .option('--env <KEY=VALUE>', 'another environment variable for the deployment (repeatable)', collect, [])
  .option(
    '--application',
    'create a CML Application (the server with batching, streaming and the playground) instead of a Model',
  )
  .option('--wait', 'follow the build to built and the deployment to deployed (or the application to running)')
  .option('--dry-run', 'print the exact requests and send nothing')
  .option(
    '--file-path <path>',
    "the predict script's path from the project root",
    'scripts/cml_model_predict_script.py',
  )
  .option('--app-script <path>', "the Application's launcher, from the project root", 'scripts/cml_application.py')
  .option('--poll <s>', 'seconds between status checks with --wait', positiveArg('--poll'), 5)
  .option('--timeout <min>', 'minutes --wait waits at most', positiveArg('--timeout'), 30)
  .action(runDeploy);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const code = err instanceof EngineError ? ` [${err.code}]` : '';
  console.error(`error${code}: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
