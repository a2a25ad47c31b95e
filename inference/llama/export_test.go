package llama

// Kernels names the kernel sets this machine can run; UseKernels picks one
// for the tests that compare them.
func Kernels() []string {
	if avx2Available {
		return []string{"go", "avx2"}
	}
	return []string{"go"}
}

func UseKernels(name string) (restore func()) {
	old := useAVX2
	useAVX2 = name == "avx2"
	return func() { useAVX2 = old }
}
