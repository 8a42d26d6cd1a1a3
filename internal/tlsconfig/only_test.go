package tlsconfig_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// Product code sets up TLS only through this package: no tls.Config
// literal of its own, and nowhere is verification turned off.
func TestOneTLSSetup(t *testing.T) {
	root := filepath.Join("..", "..")
	// Where a tls.Config literal may be written: here, and in what serves
	// TLS or starts peers for the lab and tests rather than dialling.
	literalOK := []string{"internal/tlsconfig/", "internal/emulator/"}
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Ident:
				if n.Name == "InsecureSkipVerify" {
					t.Errorf("%s: InsecureSkipVerify: TLS is always verified", fset.Position(n.Pos()))
				}
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Config" {
					if x, ok := sel.X.(*ast.Ident); ok && x.Name == "tls" && !hasPrefix(rel, literalOK) {
						t.Errorf("%s: a tls.Config literal; use tlsconfig.Client", fset.Position(n.Pos()))
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("looked at only %d files under %s", files, root)
	}
}

func hasPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
