package replay

// Rewind. A Failed run is rewound by starting a new run whose history is
// the failed run's, cut before its first failure (the worker builds it).
// The first episode the new run executes opens with ExecutionRewound: an
// event that changes nothing in the code's state but makes the episode
// non-empty, so that it is committed and the actions the cut history left
// open are sent. A run applies it once; a redelivered copy is a duplicate.

// applyRewound applies ExecutionRewound and reports whether it was new.
func (in *Instance) applyRewound() bool {
	if in.rewound {
		return false
	}
	in.rewound = true
	return true
}
