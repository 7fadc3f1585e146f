// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 as a dependency:
// the server module's own go.mod carries replace directives, so `go install module@version`
// refuses it, while a wrapper module builds it from the published versions.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
