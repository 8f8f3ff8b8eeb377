//! A proxy-wasm filter that does nothing: every callback is the SDK's
//! default (continue), no host calls. Benchmark configuration 1b loads it
//! where Tollgate's filter would be, so the report separates what Envoy's
//! wasm host costs per request for any filter (creating the context, one
//! call into the VM per callback) from what Tollgate's filter does.
//! Built by `scripts/bench.sh` (`--target wasm32-wasip1 --profile wasm-release`).

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{ContextType, LogLevel};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Nothing))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Nothing;

    impl Context for Nothing {}

    impl HttpContext for Nothing {}
}
