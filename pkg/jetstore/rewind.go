package jetstore

import (
	"strconv"
	"strings"
)

// rewindMark separates a run ID from its rewind count. Run IDs are random
// hex digits, "<parent run>-<seq>" for sub-orchestrations, or these; none
// other contains an underscore.
const rewindMark = "_r"

// RewindExecutionID returns the ID of the run that rewinding run exec
// starts: "<exec>_r1", and "<base>_r<n+1>" for exec "<base>_r<n>". It is
// derived rather than random, so that a rewind applied twice (a redelivery)
// starts the same run, and the status records of a run and of its rewinds
// are ordered by the count, whatever the clocks say (they share CreatedAt).
func RewindExecutionID(exec string) string {
	base, n := splitRewind(exec)
	return base + rewindMark + strconv.Itoa(n+1)
}

// splitRewind splits a run ID into the ID of the run first rewound and how
// many rewinds lead from it to exec.
func splitRewind(exec string) (string, int) {
	i := strings.LastIndex(exec, rewindMark)
	if i < 0 {
		return exec, 0
	}
	digits := exec[i+len(rewindMark):]
	n, err := strconv.Atoi(digits)
	if err != nil || n <= 0 || strconv.Itoa(n) != digits {
		return exec, 0
	}
	return exec[:i], n
}
