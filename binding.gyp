{
  # The shim is a plain C shared library: node-gyp only compiles it (the .node
  # name is what node-gyp-build looks for); it is loaded with koffi.load and
  # uses no Node-API. It links only libc, libdl and pthread.
  "targets": [
    {
      "target_name": "ixfer",
      "sources": [
        "csrc/src/agent.c",
        "csrc/src/cuda.c",
        "csrc/src/cufile.c",
        "csrc/src/dynlib.c",
        "csrc/src/error.c",
        "csrc/src/events.c",
        "csrc/src/fabric_info.c",
        "csrc/src/fabric_loader.c",
        "csrc/src/file.c",
        "csrc/src/file_engine.c",
        "csrc/src/gds.c",
        "csrc/src/identity.c",
        "csrc/src/memory.c",
        "csrc/src/notify.c",
        "csrc/src/posix_io.c",
        "csrc/src/progress.c",
        "csrc/src/tuning.c"
      ],
      "include_dirs": [
        "csrc/include",
        "<!(node scripts/gyp-config.cjs include)"
      ],
      "defines": ["<!@(node scripts/gyp-config.cjs defines)"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "ldflags": ["-Wl,--no-undefined", "-Wl,--as-needed"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
