// Libraries the addon opens at run time (cuBLAS, cuBLASLt, NCCL): the same binary runs where they are installed and
// where they are not, and needs none of them to build.
#pragma once

#include <dlfcn.h>

#include <initializer_list>
#include <string>

namespace bs {

// Binds `out` to the symbol `name` of an opened library; false when the library lacks it.
template <typename Fn>
bool bindSymbol(void* library, const char* name, Fn& out) {
  out = reinterpret_cast<Fn>(dlsym(library, name));
  return out != nullptr;
}

struct OpenedLibrary {
  void* handle = nullptr;  // nullptr: none opened
  const char* name = nullptr;
};

// Opens the first of `names` that dlopen finds and in which `bindAll(handle)` binds every function the addon calls (a
// library lacking one is closed and the next tried). `tried` lists the names tried, for the message saying why none.
template <typename BindAll>
OpenedLibrary openFirst(std::initializer_list<const char*> names, BindAll&& bindAll, std::string& tried) {
  for (const char* name : names) {
    tried += std::string(tried.empty() ? "" : ", ") + name;
    void* library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) continue;
    if (bindAll(library)) return {library, name};
    tried += " (lacks a function the addon calls)";
    dlclose(library);
  }
  return {};
}

}  // namespace bs
