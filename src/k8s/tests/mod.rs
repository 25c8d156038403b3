//! Unit tests of the adapter's building blocks. The render pipeline as a whole is tested
//! through the public API in `tests/k8s_*.rs`.

mod helpers;
mod load;
