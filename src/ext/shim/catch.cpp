// Calls into DuckDB that may throw a C++ exception (out of memory under
// `memory_limit`, a failed allocation), made from C++ so that the exception
// is caught here and never unwinds through Rust frames.
//
// Each trampoline takes the DuckDB function pointer and its arguments, calls
// it inside try/catch, and returns 0 on success or 1 with the exception's
// message copied (truncated, NUL-terminated) into `msg`. Trampolines are
// grouped by the shape of the call: `p` a pointer, `u` a 64-bit integer,
// `s` a C string, `i` a 32-bit result, `v` no result.

#include <cstdint>
#include <cstring>
#include <exception>

namespace {

void copy_message(const char *what, char *msg, size_t cap) {
    if (msg == nullptr || cap == 0) {
        return;
    }
    size_t n = std::strlen(what);
    if (n >= cap) {
        n = cap - 1;
    }
    std::memcpy(msg, what, n);
    msg[n] = '\0';
}

template <typename F>
int guarded(F body, char *msg, size_t cap) {
    try {
        body();
        return 0;
    } catch (const std::exception &e) {
        copy_message(e.what(), msg, cap);
    } catch (...) {
        copy_message("unknown C++ exception", msg, cap);
    }
    return 1;
}

} // namespace

extern "C" {

int lmm_call_v_p(void (*f)(void *), void *a, char *msg, size_t cap) {
    return guarded([&] { f(a); }, msg, cap);
}

int lmm_call_v_ps(void (*f)(void *, const char *), void *a, const char *s, char *msg, size_t cap) {
    return guarded([&] { f(a, s); }, msg, cap);
}

int lmm_call_v_pusu(void (*f)(void *, uint64_t, const char *, uint64_t), void *a, uint64_t i, const char *s,
                    uint64_t n, char *msg, size_t cap) {
    return guarded([&] { f(a, i, s, n); }, msg, cap);
}

int lmm_call_i_pu(int32_t (*f)(void *, uint64_t), void *a, uint64_t u, int32_t *out, char *msg, size_t cap) {
    return guarded([&] { *out = f(a, u); }, msg, cap);
}

int lmm_call_p_p(void *(*f)(void *), void *a, void **out, char *msg, size_t cap) {
    return guarded([&] { *out = f(a); }, msg, cap);
}

int lmm_call_p_pu(void *(*f)(void *, uint64_t), void *a, uint64_t u, void **out, char *msg, size_t cap) {
    return guarded([&] { *out = f(a, u); }, msg, cap);
}

} // extern "C"
