{
  "targets": [
    {
      "target_name": "shmkeep",
      "sources": [
        "native/addon.cc",
        "native/region.cc",
        "native/shm.cc",
        "native/mmap.cc",
        "native/lock.cc",
        "native/copy.cc",
        "native/chunks.cc",
        "native/fileio.cc",
        "native/job.cc",
        "native/residency.cc",
        "native/restore.cc",
        "native/save.cc",
        "native/verify.cc",
        "native/crc32c.cc",
        "native/proc.cc",
        "native/sem.cc",
        "native/msg.cc",
        "native/posixshm.cc",
        "native/mqueue.cc"
      ],
      "libraries": ["-lrt"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    }
  ]
}
