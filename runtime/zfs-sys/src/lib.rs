//! Raw libzfs/libnvpair bindings, generated with bindgen against Debian trixie's headers (allowlisted)
