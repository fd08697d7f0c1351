//! Composition root: logging, panic safety, stage dispatch. Never exits.

use std::path::Path;

use init::{console, rescue, stage1, stage2, Stage};

fn main() {
    console::install();
    std::panic::set_hook(Box::new(|info| {
        console::line(&format!("triton-init: internal error: {info}"));
    }));
    let stage = init::detect_stage(Path::new("/"));
    let result = std::panic::catch_unwind(|| match stage {
        Stage::Initrd => stage1::run(),
        Stage::Root => stage2::run(),
    });
    let reason = match result {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => format!("{e:#}"),
        Err(_) => "triton-init panicked (see the message above)".to_string(),
    };
    rescue::forever(stage, &reason)
}
