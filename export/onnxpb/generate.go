// Package onnxpb holds the Go types of ONNX's protobuf schema, generated from
// onnx.proto (copied from Debian's python3-onnx 1.12, with a go_package
// option added) by protoc and protoc-gen-go v1.36.12:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./export/onnxpb
package onnxpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative onnx.proto
