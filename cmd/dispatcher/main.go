// Command dispatcher is jetflow's control plane: it provisions streams and
// buckets, answers client commands and fires durable timers. -h lists the flags.
package main

import "github.com/jetflow/jetflow/pkg/host"

func main() { host.Main("dispatcher", host.RunDispatcher) }
