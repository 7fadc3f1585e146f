"""A local Kubernetes control plane for tests and the demo.

Real kube-apiserver, etcd, kube-controller-manager and kube-scheduler (built by
hack/build-tools.sh) plus kwok, which plays the kubelet for a simulated GPU fleet: fake nodes
with GPU Feature Discovery labels and nvidia.com/gpu or MIG resources, whose pods are really
scheduled and reach Running. Driven by the hack/cluster command; stdlib only.
"""
