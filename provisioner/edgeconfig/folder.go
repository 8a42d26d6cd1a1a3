package edgeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNoFolder is config.toml's folder missing. IoT Edge's package
// (aziot-edge, through aziot-identity-service) makes /etc/aziot and its
// services' folders, so a missing folder most likely means IoT Edge is not
// installed; making it here would only give a file nothing reads.
var ErrNoFolder = errors.New("is IoT Edge installed? Install aziot-edge from Microsoft's package repository (packages.microsoft.com; 'sudo apt-get install aziot-edge'), which makes it, or set aziot.config (--aziot-config) to the config.toml of the IoT Edge installed")

// CheckFolder returns an error wrapping ErrNoFolder when the folder that
// is to hold the config.toml at path does not exist.
func CheckFolder(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist, so %s cannot be written: %w", dir, path, ErrNoFolder)
	case err != nil:
		return fmt.Errorf("IoT Edge config folder: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("%s, the folder of %s, is not a folder", dir, path)
	}
	return nil
}
