module github.com/edgetpm/edgetpm

go 1.26
