// Command api serves the Durable Functions HTTP API over jetflow. -h lists the flags.
package main

import "github.com/jetflow/jetflow/pkg/host"

func main() { host.Main("api", host.RunAPI) }
