// Command etcd is the etcd server, built from the go.etcd.io/etcd/server/v3
// version that k8s.io/kubernetes selects (see ../../go.mod). It exists only so
// e2e tests can start a real etcd without downloading a prebuilt binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
