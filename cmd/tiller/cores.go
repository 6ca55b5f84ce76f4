package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// physicalCores is the default of --threads: the physical cores among the CPUs this process may run
// on. Two hardware threads of one core (SMT) share its vector units, which one matmul thread keeps
// busy, so a second thread per core adds contention, not throughput. Where the topology cannot be
// read it is the logical CPU count.
func physicalCores() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return runtime.NumCPU()
	}
	var cpus []int
	for c := 0; c < 64*len(set); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	n, err := coresOf("/sys/devices/system/cpu", cpus)
	if err != nil || n < 1 {
		return runtime.NumCPU()
	}
	return n
}

// coresOf counts the distinct (package, core) pairs of the given logical CPUs, read from a sysfs
// CPU folder (cpuN/topology/physical_package_id and core_id).
func coresOf(sysfs string, cpus []int) (int, error) {
	cores := map[string]bool{}
	for _, c := range cpus {
		topo := filepath.Join(sysfs, fmt.Sprintf("cpu%d", c), "topology")
		pkg, err := os.ReadFile(filepath.Join(topo, "physical_package_id"))
		if err != nil {
			return 0, err
		}
		core, err := os.ReadFile(filepath.Join(topo, "core_id"))
		if err != nil {
			return 0, err
		}
		cores[strings.TrimSpace(string(pkg))+"/"+strings.TrimSpace(string(core))] = true
	}
	return len(cores), nil
}
