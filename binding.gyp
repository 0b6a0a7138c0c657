{
  # Two addons from the same native/ sources, compiled once (cml_core; the module entry, addon.cpp,
  # in each, so the linker pulls the rest from the archive through it) and linked twice:
  #   build/Release/cml_llama.node                 node-llama-cpp's prebuilt CPU llama.cpp
  #   build/Release/cml_llama_cuda_prebuilt.node   node-llama-cpp's prebuilt CUDA llama.cpp (when its
  #                                                package is installed: linux x64), so a CUDA box
  #                                                needs no nvcc; `npm run build:cuda` is faster still
  # Their libraries share names (libggml-base.so), so one process loads only one of them.
  "variables": {
    "llama_src": "<(module_root_dir)/node_modules/node-llama-cpp/llama/llama.cpp",
    "llama_bins": "<(module_root_dir)/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64",
    "cuda_bins": "<(module_root_dir)/node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda",
    "has_cuda_prebuilt": "<!(node -p \"require('fs').existsSync(process.argv[1] + '/libllama.cuda.v0.4.0.so') ? 1 : 0\" <(module_root_dir)/node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda)"
  },
  "target_defaults": {
    "include_dirs": [
      "<!(node -p \"require('node-addon-api').include_dir\")",
      "<(llama_src)/include",
      "<(llama_src)/ggml/include",
      "<(llama_src)/src"
    ],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-fPIC", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"]
  },
  "targets": [
    {
      "target_name": "cml_core",
      "type": "static_library",
      "sources": [
        "native/adapter_bank.cpp",
        "native/lora_hook.cpp",
        "native/gathered_lora.cpp",
        "native/bank_check.cpp",
        "native/engine.cpp",
        "native/engine_requests.cpp",
        "native/js_params.cpp",
        "native/params.cpp",
        "native/scheduler.cpp",
        "native/scheduling_policy.cpp",
        "native/slots.cpp",
        "native/sampling.cpp",
        "native/worker_pool.cpp",
        "native/merge.cpp",
        "native/merge_worker.cpp",
        "native/quantize_worker.cpp",
        "native/adapters.cpp",
        "native/text_stream.cpp",
        "native/llama_log.cpp"
      ]
    },
    {
      "target_name": "cml_llama",
      "dependencies": ["cml_core"],
      "sources": ["native/addon.cpp"],
      "libraries": [
        "-L<(llama_bins)",
        "-l:libllama.v0.4.0.so",
        "-l:libggml.v0.4.0.so",
        "-l:libggml-base.so",
        "-Wl,-rpath,<(llama_bins)"
      ]
    }
  ],
  "conditions": [
    ["has_cuda_prebuilt==1", {
      "targets": [
        {
          "target_name": "cml_llama_cuda_prebuilt",
          "dependencies": ["cml_core"],
          "sources": ["native/addon.cpp"],
          "libraries": [
            "-L<(cuda_bins)",
            "-l:libllama.cuda.v0.4.0.so",
            "-l:libggml.cuda.v0.4.0.so",
            "-l:libggml-base.so",
            "-Wl,-rpath,<(cuda_bins)"
          ]
        }
      ]
    }]
  ]
}
