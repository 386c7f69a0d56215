package torch

// Build configuration.
//
// By default cgo compiles shim.cc into this package against Debian's
// libtorch-dev (headers under /usr/include, libraries on the default linker
// path). Another libtorch (the official 2.x archive with CUDA, or the one in a
// PyTorch wheel) is chosen through the environment, never by editing code:
//
//	export LIBTORCH=/opt/libtorch
//	export CGO_CXXFLAGS="-I$LIBTORCH/include -I$LIBTORCH/include/torch/csrc/api/include"
//	export CGO_LDFLAGS="-L$LIBTORCH/lib -Wl,-rpath,$LIBTORCH/lib -Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed"
//	go build ./...
//
// The environment's flags come before the ones below, so its include
// directories win. With -tags dimtorch_shim the package instead links a
// separately built libdimtorch_shim.so (see CMakeLists.txt).

/*
#cgo CXXFLAGS: -std=c++17 -O2 -I/usr/include/torch/csrc/api/include -Wno-deprecated-declarations -Wno-unused-parameter
#cgo !dimtorch_shim CXXFLAGS: -fopenmp
#cgo !dimtorch_shim LDFLAGS: -ltorch -ltorch_cpu -lc10 -fopenmp
#cgo dimtorch_shim LDFLAGS: -ldimtorch_shim
*/
import "C"
