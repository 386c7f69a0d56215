module github.com/dimtorch/dimtorch

go 1.26.8
