"""The local dev stack: etcd, kube-apiserver, kube-controller-manager, OpenBao and the STS emulator."""
