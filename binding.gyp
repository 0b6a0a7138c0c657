{
  "variables": {
    "llama_src": "<(module_root_dir)/node_modules/node-llama-cpp/llama/llama.cpp",
    "llama_bins": "<(module_root_dir)/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
  },
  "targets": [
    {
      "target_name": "cml_llama",
      "sources": [
        "native/addon.cpp",
        "native/engine.cpp",
        "native/engine_requests.cpp",
        "native/js_params.cpp",
        "native/params.cpp",
        "native/scheduler.cpp",
        "native/slots.cpp",
        "native/sampling.cpp",
        "native/worker_pool.cpp",
        "native/merge.cpp",
        "native/merge_worker.cpp",
        "native/adapters.cpp",
        "native/text_stream.cpp",
        "native/llama_log.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(llama_src)/include",
        "<(llama_src)/ggml/include"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": [
        "-L<(llama_bins)",
        "-l:libllama.v0.4.0.so",
        "-l:libggml.v0.4.0.so",
        "-l:libggml-base.so",
        "-Wl,-rpath,<(llama_bins)"
      ]
    }
  ]
}
