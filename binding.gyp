{
  # The shim is a plain C shared library: node-gyp only compiles it (the .node
  # name is what node-gyp-build looks for); it is loaded with koffi.load and
  # uses no Node-API. It links only libc, libdl and pthread.
  "targets": [
    {
      "target_name": "ixfer",
      "sources": [
        "csrc/src/core/dynlib.c",
        "csrc/src/core/error.c",
        "csrc/src/core/events.c",
        "csrc/src/core/identity.c",
        "csrc/src/core/memory.c",
        "csrc/src/core/request.c",
        "csrc/src/core/tuning.c",
        "csrc/src/file/cufile.c",
        "csrc/src/file/file.c",
        "csrc/src/file/file_engine.c",
        "csrc/src/file/gds.c",
        "csrc/src/file/posix_io.c",
        "csrc/src/gpu/cuda.c",
        "csrc/src/net/agent.c",
        "csrc/src/net/fabric_info.c",
        "csrc/src/net/fabric_loader.c",
        "csrc/src/net/link_watch.c",
        "csrc/src/net/mr.c",
        "csrc/src/net/notify.c",
        "csrc/src/net/peer.c",
        "csrc/src/net/progress.c",
        "csrc/src/net/rail_worker.c",
        "csrc/src/net/staging.c",
        "csrc/src/net/submit.c",
        "csrc/src/net/wake.c"
      ],
      "include_dirs": [
        "csrc/include",
        "csrc/src",
        "<!(node scripts/gyp-config.cjs include)"
      ],
      "defines": ["<!@(node scripts/gyp-config.cjs defines)"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "ldflags": ["-Wl,--no-undefined", "-Wl,--as-needed"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
