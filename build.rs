//! Compiles the C++ trampolines of `src/ext/shim/catch.cpp`, through which
//! every DuckDB call that may throw is made (see `src/ext/checked.rs`).

fn main() {
    println!("cargo:rerun-if-changed=src/ext/shim/catch.cpp");
    cc::Build::new()
        .cpp(true)
        .file("src/ext/shim/catch.cpp")
        .flag_if_supported("-std=c++17")
        .warnings(true)
        .compile("lmm_catch");
}
