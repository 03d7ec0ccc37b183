// Package procstate reads a process's scheduling state from /proc (Linux),
// for tests that stop, resume and kill the processes they start.
package procstate

import (
	"bytes"
	"os"
	"strconv"
)

// Alive reports whether pid is a process that has not exited (a zombie has).
func Alive(pid int) bool {
	s := state("/proc/" + strconv.Itoa(pid) + "/stat")
	return s != 0 && s != 'Z' && s != 'X'
}

// Stopped reports whether every thread of pid is stopped by a signal. A
// stop signal takes effect thread by thread, as each is next scheduled:
// until all are stopped, the process may still answer.
func Stopped(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		if state(dir+task.Name()+"/stat") != 'T' {
			return false
		}
	}
	return true
}

// state is the state letter of a stat file, 0 when it cannot be read. The
// command name before it is in parentheses and may itself contain them.
func state(path string) byte {
	stat, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0
	}
	return stat[i+2]
}
