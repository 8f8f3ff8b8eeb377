//! Kubernetes manifests for Istio and Envoy Gateway (being written).
