//go:build tools

// The binary this module builds (see scripts/lib.sh kube_binaries).
package tools

import _ "go.etcd.io/etcd/server/v3"
