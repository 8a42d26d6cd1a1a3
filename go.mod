module github.com/edgetpm/edgetpm

go 1.26

require github.com/google/go-tpm v0.9.8

require (
	github.com/google/go-tpm-tools v0.4.11 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
