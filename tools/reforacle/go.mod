// The live reference oracle: github.com/distribution/reference at the version
// containerd v2 and the kubelet pin.
module harbor-pilot.io/tools/reforacle

go 1.26.0

require github.com/distribution/reference v0.6.0

require github.com/opencontainers/go-digest v1.0.0 // indirect
