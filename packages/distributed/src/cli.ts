#!/usr/bin/env node
import { runLauncherCommand } from "./launcher";

runLauncherCommand(process.argv.slice(2)).then((code) => process.exit(code));
