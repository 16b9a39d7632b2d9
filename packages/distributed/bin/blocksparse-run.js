#!/usr/bin/env node
// The launcher's bin: a committed file, so that package managers can link it before dist/ is built.
import "../dist/cli.js";
