package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse decodes YAML over c strictly: every unknown field and every value
// of the wrong type is reported with its path and line.
func Parse(data []byte, c *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse config: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	var errs []error
	decodeNode(doc.Content[0], reflect.ValueOf(c).Elem(), "", &errs)
	return errors.Join(errs...)
}

var yamlLine = regexp.MustCompile(`^yaml: (unmarshal errors:\n\s*)?line \d+: `)

func decodeNode(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	at := func(format string, args ...any) {
		p := path
		if p == "" {
			p = "(root)"
		}
		*errs = append(*errs, fmt.Errorf("%s (line %d): %s", p, n.Line, fmt.Sprintf(format, args...)))
	}
	if v.Kind() != reflect.Struct {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			at("%s", yamlLine.ReplaceAllString(err.Error(), ""))
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return
		}
		at("must be a mapping")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		sub := key
		if path != "" {
			sub = path + "." + key
		}
		f, ok := fieldByTag(v, key)
		if !ok {
			*errs = append(*errs, fmt.Errorf("%s (line %d): unknown field", sub, n.Content[i].Line))
			continue
		}
		decodeNode(val, f, sub, errs)
	}
}

func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// Load reads the file at path (if any) over the defaults, applies the
// flags that were set, and validates the result.
func Load(path string, apply func(*Config)) (Config, error) {
	c := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		if err := Parse(data, &c); err != nil {
			return c, fmt.Errorf("config %s:\n%w", path, err)
		}
	}
	if apply != nil {
		apply(&c)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return c, nil
}

// Flags registers the flags that override the file on fs. The returned
// function applies only the flags given on the command line.
func Flags(fs *flag.FlagSet) func(*Config) {
	d := Default()
	var f Config
	fs.StringVar(&f.Server.HTTPAddr, "http-addr", d.Server.HTTPAddr, "HTTP listen address (server.http_addr)")
	fs.StringVar(&f.Server.GRPCAddr, "grpc-addr", d.Server.GRPCAddr, "gRPC listen address, empty to disable (server.grpc_addr)")
	fs.StringVar(&f.Engine.Kind, "engine", d.Engine.Kind, "inference engine (engine.kind)")
	fs.StringVar(&f.Engine.Model, "model", d.Engine.Model, "served model name (engine.model)")
	fs.IntVar(&f.Batch.MaxBatchSize, "max-batch-size", d.Batch.MaxBatchSize, "sequences per step (batch.max_batch_size)")
	fs.IntVar(&f.Admission.MaxQueue, "max-queue", d.Admission.MaxQueue, "waiting requests before 429 (admission.max_queue)")
	fs.StringVar(&f.Log.Level, "log-level", d.Log.Level, "debug, info, warn or error (log.level)")
	fs.StringVar(&f.Log.Format, "log-format", d.Log.Format, "json or text (log.format)")
	return func(c *Config) {
		fs.Visit(func(fl *flag.Flag) {
			switch fl.Name {
			case "http-addr":
				c.Server.HTTPAddr = f.Server.HTTPAddr
			case "grpc-addr":
				c.Server.GRPCAddr = f.Server.GRPCAddr
			case "engine":
				c.Engine.Kind = f.Engine.Kind
			case "model":
				c.Engine.Model = f.Engine.Model
			case "max-batch-size":
				c.Batch.MaxBatchSize = f.Batch.MaxBatchSize
			case "max-queue":
				c.Admission.MaxQueue = f.Admission.MaxQueue
			case "log-level":
				c.Log.Level = f.Log.Level
			case "log-format":
				c.Log.Format = f.Log.Format
			}
		})
	}
}
