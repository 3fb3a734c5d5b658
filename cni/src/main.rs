//! The `sluice-cni` binary: CNI_* in the environment, the config on stdin, the
//! result or the error on stdout, logs on stderr.

fn main() {
    std::process::exit(sluice_cni::commands::main());
}
