// Package replay is the orchestration API that users write against, and
// the deterministic replay engine that runs it.
//
// # Writing an orchestrator
//
// An Orchestrator is a function of a *Context. It must be deterministic:
// it reaches time (CurrentTime), randomness (NewGUID) and the world
// (CallActivity, CallSubOrchestrator, CreateTimer, WaitForExternalEvent)
// only through its Context, so that running it again over its history
// takes the same actions. WhenAll and WhenAny fan out and in;
// SetCustomStatus publishes a JSON value clients read while the
// orchestration runs; Logger stays quiet while it replays.
//
// # Replay
//
// An Instance holds the replayed state of one run. Replay applies the
// committed history; Step applies new events as one episode and returns
// the events to append to history and the actions to carry out. Code that
// no longer matches its history fails with a *NonDeterminismError naming
// what history recorded and what the code did.
package replay
