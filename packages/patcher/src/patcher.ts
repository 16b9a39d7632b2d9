import { divisors } from "@blocksparse/format";
import { Tensor, abs, max, tidy } from "@blocksparse/core";
import { BlockSparseLinear, DEFAULT_BLOCK_SHAPE, Linear, Module, Parameter, blockCountFor, noGrad } from "@blocksparse/nn";
import { PatchError } from "./errors";
import { type PatchOptions, PatchOptionsSchema, type PatternOptions, PatternOptionsSchema, parseOptions } from "./options";
import { type PatchedLayer, PatchReport } from "./report";

/** A Linear of the model that patchModel would accept, by dotted name. */
export interface PatchableLayer {
  /** Its first name in `namedModules()` order (the name a pattern matching every name reports it under). */
  name: string;
  /** Every name a pattern can match it by (more than one for a Linear held in several places), `name` first. */
  names: string[];
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}

interface NamePattern {
  /** As the user wrote it: "/fc\d$/" for a RegExp, the source for a string. */
  label: string;
  regex: RegExp;
  density: number;
  blockShape: [number, number];
  /** For a string written like a regex literal ("/fc1$/i"): what to say if it matches nothing. */
  literalHint: string | null;
  /** For a string: the source matched from the start of a name only (Python's re.match), to say so when the whole-name match finds nothing. */
  prefix: RegExp | null;
}

interface Plan {
  layer: PatchedLayer;
  linear: Linear;
}

/**
 * Replaces a model's Linear layers by BlockSparseLinear (built with `fromLinear`, which
 * keeps each layer's strongest blocks), choosing layers by their dotted names:
 *
 *   new BlockSparseModelPatcher()
 *     .addPattern(/mlp\.fc\d$/, { density: 0.25 })
 *     .addPattern("head", { density: 0.5, blockShape: [16, 32] })
 *     .patchModel(model);
 *
 * Patterns are tried in the order they were added and the first that matches a name wins.
 * A Linear reachable under several names (an alias, a shared submodule) is one layer: the
 * first pattern that matches any of its names wins, and it is replaced under every name.
 */
export class BlockSparseModelPatcher {
  readonly #patterns: NamePattern[] = [];

  /**
   * Adds a pattern. A string is a regex source matched against the whole name (it is
   * wrapped in ^(?:...)$); a RegExp is used as is (unanchored unless it says so; a y flag
   * anchors it at the start of the name, as Python's re.match; g is dropped, and matching is stateless).
   */
  addPattern(pattern: RegExp | string, options: PatternOptions): this {
    const where = "BlockSparseModelPatcher.addPattern";
    let regex: RegExp;
    let label: string;
    let literalHint: string | null = null;
    let prefix: RegExp | null = null;
    if (isRegExp(pattern)) {
      // Sticky (y) at lastIndex 0 is anchored at the start: kept, with lastIndex reset before every test (see matches).
      regex = new RegExp(pattern.source, pattern.flags.replace(/g/g, ""));
      label = String(pattern);
    } else if (typeof pattern === "string" && pattern !== "") {
      try {
        // Compiled alone first: "fc1)|(x" is invalid alone but valid once wrapped, where it would escape the anchors.
        new RegExp(pattern);
        regex = new RegExp(`^(?:${pattern})$`);
        prefix = new RegExp(`^(?:${pattern})`);
      } catch (error) {
        throw new PatchError(where, [`pattern ${JSON.stringify(pattern)} is not a valid regular expression (${(error as Error).message})`]);
      }
      label = pattern;
      literalHint = regexLiteralHint(pattern);
    } else {
      throw new PatchError(where, [`pattern must be a RegExp or a non-empty regex source string, got ${describePattern(pattern)}`]);
    }
    if (options === null || typeof options !== "object") throw new PatchError(where, ["options { density, blockShape? } are required"]);
    const parsed = parseOptions(where, PatternOptionsSchema, options);
    const blockShape = parsed.blockShape ?? DEFAULT_BLOCK_SHAPE;
    this.#patterns.push({ label, regex, density: parsed.density, blockShape: [blockShape[0], blockShape[1]], literalHint, prefix });
    return this;
  }

  /** The patterns added so far, as written, in matching order. */
  get patterns(): string[] {
    return this.#patterns.map((p) => p.label);
  }

  /**
   * Every Linear of `model` that `patchModel` would accept (the root excluded), in `namedModules()` order:
   * a pattern matching any of its `names` (with a block shape that tiles it) patches it. Left out, as
   * patchModel refuses them: Linear layers held only in plain arrays, plain objects, Maps, Sets or instances of classes that are not
   * Modules (Module does not register them), or also held in a Set, such an instance or as a Map's key (never rewritten), in a
   * read-only slot, with a weight or bias that is not a Parameter, with disposed or misshapen parameters or a non-finite weight, subclasses with extra state or their own forward,
   * and layers whose weight or bias is shared with a module that cannot be patched.
   */
  getPatchableLayers(model: Module): PatchableLayer[] {
    checkModel("BlockSparseModelPatcher.getPatchableLayers", model);
    const walk = walkModel(model);
    const candidates = new Map<Module, string>();
    for (const [name, module] of walk.modules) {
      if (name !== "" && module instanceof Linear && layerProblems(name, module, walk).length === 0) candidates.set(module, name);
    }
    // A layer sharing a parameter with one that stays dense is refused, which may in turn refuse the layers it shares with.
    for (let dropped = true; dropped; ) {
      const refused = sharingProblems(walk, candidates);
      dropped = refused.size > 0;
      for (const module of refused.keys()) candidates.delete(module);
    }
    return walk.modules
      .filter((entry): entry is [string, Linear] => candidates.has(entry[1]))
      .map(([name, linear]) => ({
        name,
        names: walk.namesOf.get(linear) ?? [name],
        inFeatures: linear.inFeatures,
        outFeatures: linear.outFeatures,
        bias: hasBias(linear),
      }));
  }

  /**
   * Replaces every Linear one of whose names a pattern matches with `BlockSparseLinear.fromLinear`.
   * Everything is checked first, so a refused patch leaves the model untouched: a match
   * that is not a Linear, a block shape that does not divide a layer, a weight shared with
   * a module that stays, a Linear subclass holding more than weight and bias or with a
   * forward of its own, a slot the
   * replacement cannot be put in (a read-only or dotted property, a frozen array), a Linear held
   * only in a plain array, plain object, Map, Set or instance of a class that is not a Module (Module does not register it: its
   * path, "layers.0", "heads.a" or "extra.inner.proj", is named), a Linear also held in a Set, such an instance or as a Map's key, or no
   * match at all (unless `allowNoMatch`) throw a PatchError. A Linear also held in a plain array, plain object or Map is replaced there too.
   * Null options are the defaults. With `dryRun`, returns the same report without changing the model. With
   * `disposeReplaced`, the replaced Linear layers' parameters are disposed once the new layers are in place.
   */
  patchModel(model: Module, options: PatchOptions | null = {}): PatchReport {
    const where = "BlockSparseModelPatcher.patchModel";
    checkModel(where, model);
    const { dryRun = false, allowNoMatch = false, disposeReplaced = false } = parseOptions(where, PatchOptionsSchema, options ?? undefined) ?? {};
    const walk = walkModel(model);
    const { modules, namesOf } = walk;
    const plans: Plan[] = [];
    const problems: string[] = [];
    const matched = new Set<NamePattern>();
    const claimed = new Set<NamePattern>();
    for (const [firstName, module] of modules) {
      if (firstName === "") continue;
      const names = namesOf.get(module) ?? [firstName];
      const matching = this.#patterns.filter((p) => names.some((name) => matches(p, name)));
      if (matching.length === 0) continue;
      for (const p of matching) matched.add(p);
      const winner = matching[0];
      claimed.add(winner);
      // The layer is reported under the name its pattern matched.
      const name = names.find((candidate) => matches(winner, candidate)) ?? firstName;
      if (module instanceof BlockSparseLinear) {
        problems.push(`'${name}' (matched by ${winner.label}) is already a BlockSparseLinear`);
      } else if (!(module instanceof Linear)) {
        problems.push(`'${name}' (matched by ${winner.label}) is a ${module.constructor.name}, not a Linear; make the pattern match only Linear layers`);
      } else {
        const divisibility = divisibilityProblem(name, module, winner.blockShape);
        const layer = divisibility !== null ? [divisibility] : layerProblems(name, module, walk);
        if (layer.length > 0) problems.push(...layer);
        else plans.push({ linear: module, layer: plannedLayer(name, module, winner) });
      }
    }
    // A Linear the model holds only in plain arrays, objects, Maps, Sets or non-Module instances is not the model's (no parameters, no state dict): matching it is an error, not a skip.
    for (const [module, { paths, array, holder, kind, what }] of walk.unregistered) {
      if (!(module instanceof Linear)) continue;
      for (const path of paths) {
        const pattern = this.#patterns.find((p) => matches(p, path));
        if (pattern === undefined) continue;
        problems.push(
          `'${path}' (matched by ${pattern.label}) is a ${module.constructor.name} held in the ${what} '${array}' of ${holder}, which Module does not register ` +
            "(it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; " +
            registerAdvice(kind, what),
        );
        break;
      }
    }
    const patched = new Map<Module, string>(plans.map((p) => [p.linear, p.layer.name]));
    problems.push(...[...sharingProblems(walk, patched).values()].flat(), ...tyingProblems(plans));
    if (problems.length > 0) throw new PatchError(where, problems);
    const unmatchedPatterns = this.#patterns.filter((p) => !matched.has(p)).map((p) => p.label);
    const shadowedPatterns = this.#patterns.filter((p) => matched.has(p) && !claimed.has(p)).map((p) => p.label);
    const names = modules.filter(([name, module]) => name !== "" && module instanceof Linear).flatMap(([name, module]) => namesOf.get(module) ?? [name]);
    const hints = this.#patterns.filter((p) => !matched.has(p)).flatMap((p) => unmatchedHint(p, names) ?? []);
    if (plans.length === 0 && !allowNoMatch) {
      const patterns = this.#patterns.length === 0 ? "no patterns were added (call addPattern first)" : `no layer matched ${this.patterns.join(", ")}`;
      const unregisteredLinears = [...walk.unregistered].filter(([module]) => module instanceof Linear).map(([, entry]) => entry);
      const unregistered = unregisteredLinears.flatMap(({ paths }) => paths);
      const kinds = new Set(unregisteredLinears.map(({ kind }) => kind));
      const plain = kinds.has("object") ? (kinds.has("array") ? "plain arrays or objects" : "plain objects") : kinds.has("array") ? "plain arrays" : "";
      const others = [kinds.has("map") ? "Maps" : "", kinds.has("set") ? "Sets" : "", kinds.has("instance") ? "instances of classes that are not Modules" : ""];
      const containers = [plain, ...others].filter((words) => words !== "").join(" or ");
      const inArrays =
        unregistered.length > 0 ? `; Linear layers held in ${containers}, which Module does not register and the patcher cannot patch: ${unregistered.join(", ")}` : "";
      const root =
        model instanceof Linear
          ? "; the model itself is a Linear, which is never patched (the root has no parent to hold its replacement): use BlockSparseLinear.fromLinear for a lone layer"
          : "";
      throw new PatchError(where, [
        `${patterns}; the model's Linear layers are: ${names.length > 0 ? names.join(", ") : "(none)"} (pass allowNoMatch to accept this)${inArrays}${root}${hints.map((hint) => `; ${hint}`).join("")}`,
      ]);
    }
    const modelParamsBefore = modelParameterCount(modules);
    const { paramsBefore, paramsAfter } = parameterTotals(plans);
    if (!dryRun) {
      replaceLayers(walk, plans);
      if (disposeReplaced) disposeParameters(plans);
    }
    const totals = {
      layers: plans.length,
      paramsBefore,
      paramsAfter,
      modelParamsBefore,
      modelParamsAfter: dryRun ? modelParamsBefore - paramsBefore + paramsAfter : modelParameterCount(registeredModules(model)),
    };
    return new PatchReport(
      plans.map((p) => p.layer),
      totals,
      unmatchedPatterns,
      shadowedPatterns,
      dryRun,
      hints,
    );
  }
}

/**
 * A string written like a regex literal ("/fc1$/i") is a name pattern with its slashes, which no dotted name
 * has: the hint for when it matches nothing, or null for any other string.
 */
function regexLiteralHint(pattern: string): string | null {
  const literal = /^\/(.+)\/([a-z]*)$/s.exec(pattern);
  if (literal === null) return null;
  try {
    new RegExp(literal[1], literal[2]);
  } catch {
    return null;
  }
  return `the string ${JSON.stringify(pattern)} is a name pattern matched with its slashes; for a regular expression pass a RegExp: ${pattern}, not ${JSON.stringify(pattern)}`;
}

/**
 * Why a pattern that matched nothing may have been meant otherwise: a string written like a regex literal, or a string
 * that matches only the start of some Linear layers' names (pytorch_block_sparse's re.match takes those; a string
 * here must match the whole name). Null when neither.
 */
function unmatchedHint(pattern: NamePattern, linearNames: string[]): string | null {
  if (pattern.literalHint !== null) return pattern.literalHint;
  const prefix = pattern.prefix;
  if (prefix === null) return null;
  const starts = linearNames.filter((name) => prefix.test(name));
  if (starts.length === 0) return null;
  const listed = starts.length > 4 ? `${starts.slice(0, 4).join(", ")} and ${starts.length - 4} more` : starts.join(", ");
  // An alternation's .* would bind to its last branch only.
  const anyEnd = pattern.label.includes("|") ? `(?:${pattern.label}).*` : `${pattern.label}.*`;
  return (
    `the string pattern ${pattern.label} must match a whole name; it matches only the start of ${listed} ` +
    `(as Python's re.match would take it): to patch those, write ${anyEnd} or pass the RegExp ${new RegExp(pattern.label, "y")}, which matches from the start`
  );
}

/** A RegExp, also one made in another realm (a vm context, an iframe), which is not an instance of this realm's RegExp. */
function isRegExp(pattern: unknown): pattern is RegExp {
  return pattern instanceof RegExp || Object.prototype.toString.call(pattern) === "[object RegExp]";
}

/** What was passed for a pattern, in a few words: typeof says "object" for null and for an array of patterns. */
function describePattern(pattern: unknown): string {
  if (pattern === "") return '""';
  if (pattern === null) return "null";
  if (Array.isArray(pattern)) return "an array (add each pattern with its own addPattern call, or join them with | in one regex)";
  return typeof pattern === "object" ? describeModel(pattern) : typeof pattern;
}

/** How to register layers held in a container of this kind. */
function registerAdvice(kind: ContainerKind, what: string): string {
  if (kind === "array" || kind === "set") return "hold the layers in a ModuleList (or Sequential) to register them";
  if (kind === "instance") return `make the ${what.replace(/ instance$/, "")} class extend Module (or hold the layers in a Module) to register them`;
  return "hold the layers in a ModuleDict (or make each a property of a Module) to register them";
}

/** Whether `pattern` matches `name`, whatever earlier tests left in lastIndex (a sticky regex reads it). */
function matches(pattern: NamePattern, name: string): boolean {
  pattern.regex.lastIndex = 0;
  return pattern.regex.test(name);
}

function checkModel(where: string, model: unknown): asserts model is Module {
  if (!(model instanceof Module)) throw new PatchError(where, [`model must be a Module, got ${describeModel(model)}`]);
}

/** What was passed for a model, in a few words (String() of a class prints its whole source). */
function describeModel(model: unknown): string {
  if (typeof model === "function") {
    const name = model.name === "" ? "(anonymous)" : model.name;
    if (model.prototype instanceof Module) return `the class ${name}, not a model built from it (construct it first: new ${name}(...))`;
    return `a function (${name})`;
  }
  if (model === null || typeof model !== "object") return String(model);
  if (model instanceof Promise) return "a Promise (await it first)";
  return (model as object).constructor?.name ?? "an object";
}

/**
 * `path` and `key` as one dotted path. An empty key is written [""], in brackets as other parts that are not names are ("[key 0]"
 * for a Map's key): joined bare, a layer held under "" would take its holder's name (the root's "", which is never patched) and
 * its children their uncles' ("fc" for both model.fc and model[""].fc).
 */
function childPath(path: string, key: string): string {
  const part = key === "" ? '[""]' : key;
  return path === "" ? part : `${path}.${part}`;
}

/**
 * `model.namedModules()` (each module once, root first, depth first), each named with childPath: nn names a module held under
 * "" as its holder, so neither it nor its children could be listed or matched by a name of their own.
 */
function registeredModules(model: Module): [string, Module][] {
  const paths = new Map<Module, string>();
  const visit = (module: Module, path: string): void => {
    if (paths.has(module)) return;
    paths.set(module, path);
    for (const [key, child] of module.namedChildren()) visit(child, childPath(path, key));
  };
  visit(model, "");
  // namedModules() keeps the order, and names each module for nn's own messages (a layer's label, "Linear(blocks.0.fc1)").
  return model.namedModules().map(([name, module]) => [paths.get(module) ?? name, module]);
}

/**
 * Elements of the modules' parameters, each parameter once, as nn's parameterCount counts them, except that a plain Tensor left in
 * a layer's parameter slot is passed over, not refused: parameters() throws a ValueError for one anywhere in the model, which
 * would stop a patch of other layers (a layer a pattern matches is refused for it with a PatchError, see notParameterProblem).
 * Module registers only Parameters, so such a tensor is not one of the model's parameters.
 */
function modelParameterCount(modules: [string, Module][]): number {
  const seen = new Set<Parameter>();
  let count = 0;
  for (const [, module] of modules) {
    for (const [, parameter] of module.namedOwnParameters()) {
      if (seen.has(parameter)) continue;
      seen.add(parameter);
      count += parameter.size;
    }
  }
  return count;
}

/**
 * Names kept per module. Blocks that hold earlier blocks (a `prev` and a `skip`, say) have
 * exponentially many paths; without a bound the walk never ends. Aliases have a few.
 */
const MAX_NAMES_PER_MODULE = 64;

/**
 * Every dotted name under which each module below the root is reachable (the first
 * MAX_NAMES_PER_MODULE), in depth-first order: a module held in two places (`enc.0` and
 * `head`) has both. A module holding one of its ancestors is not followed back into it.
 */
function reachableNames(model: Module): Map<Module, string[]> {
  const names = new Map<Module, string[]>();
  const ancestors = new Set<Module>();
  const visit = (module: Module, path: string): void => {
    if (ancestors.has(module)) return;
    if (path !== "") {
      const known = names.get(module) ?? [];
      // Each module is walked into at most MAX_NAMES_PER_MODULE times, so the walk is linear in the model's size.
      if (known.length >= MAX_NAMES_PER_MODULE) return;
      known.push(path);
      names.set(module, known);
    }
    ancestors.add(module);
    for (const [key, child] of module.childSlots()) visit(child, childPath(path, key));
    ancestors.delete(module);
  };
  visit(model, "");
  return names;
}

/** A place that holds a module: a property of a module or of an instance, an element of a plain array, object or Set, or a Map's value or key. */
interface Slot {
  holder: Module | Container;
  /** A property name, a Map's key (of any type) for its value, a MapKey for the key itself, or a Set element's position. */
  key: unknown;
  /** Its dotted path from the root ("enc.0", "layers.1"). */
  path: string;
}

/** A module the model holds only through containers (plain arrays, objects, Maps, Sets, non-Module instances): Module does not register it. */
interface Unregistered {
  /** Its paths as a ModuleList in place of each array would name them ("layers.0", "blocks.0.fc1", "heads.a"). */
  paths: string[];
  /** The path of the first container on its first path, and the class of the module holding that container. */
  array: string;
  holder: string;
  /** What that container is, and how a message names it. */
  kind: ContainerKind;
  what: string;
}

/** An instance is of a class that is not a Module (`this.extra = new Holder()`): its properties are walked, never rewritten. */
type ContainerKind = "array" | "object" | "map" | "set" | "instance";

/** What Module does not register: a plain array or object (a Python list or dict), a Map, a Set, or an instance of a class that is not a Module. */
type Container = unknown[] | Record<string, unknown> | Map<unknown, unknown> | Set<unknown>;

function containerKind(value: unknown): ContainerKind | undefined {
  if (Array.isArray(value)) return "array";
  if (value instanceof Map) return "map";
  if (value instanceof Set) return "set";
  if (isPlainObject(value)) return "object";
  return isPlainInstance(value) ? "instance" : undefined;
}

/** How a message names a container of this kind ("plain array", "Set", "Holder instance"). */
function containerName(kind: ContainerKind, container: object): string {
  if (kind === "instance") return `${className(container)} instance`;
  return { array: "plain array", object: "plain object", map: "Map", set: "Set" }[kind];
}

/** The name of the class that made `value`, for messages; an object whose prototype chain has no constructor (Object.create of a null-prototype object) has none. */
function className(value: object): string {
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === "string" && name !== "" ? name : "(anonymous)";
}

/** The slot of a Map's key (never rewritten: re-keying would move the entry), by the entry's position. */
class MapKey {
  constructor(readonly position: number) {}
}

/** Whether two slot keys name one place: a Map key's slot by its position, any other by identity. */
function sameSlotKey(a: unknown, b: unknown): boolean {
  return a === b || (a instanceof MapKey && b instanceof MapKey && a.position === b.position);
}

/**
 * Calls `visit` with each entry of a container whose value is an object, the only values that can hold a module (numbers and
 * strings, a vocabulary or token ids, are passed over without a path part made for them): its key, the key as a path part (a
 * Set's element, and a Map's key that is not a string or number, by its position), its value. A Map's key that is an object is
 * visited first, as a value of its own at a MapKey (path part `[key 0]`). An array is walked by its elements (see forEachElement).
 */
function forEachEntry(items: Container, visit: (key: unknown, pathKey: string, value: object) => void): void {
  if (Array.isArray(items)) {
    forEachElement(items, (index, value) => {
      const key = String(index);
      visit(key, key, value);
    });
    return;
  }
  if (items instanceof Set) {
    let index = 0;
    for (const value of items) {
      if (isObject(value)) visit(index, String(index), value);
      index++;
    }
    return;
  }
  if (items instanceof Map) {
    let index = 0;
    for (const [key, value] of items) {
      // A key can be a layer too (per-layer settings, a forward that walks the keys): walked as a Set's element is.
      if (isObject(key)) visit(new MapKey(index), `[key ${index}]`, key);
      if (isObject(value)) visit(key, typeof key === "string" || typeof key === "number" ? String(key) : `[${index}]`, value);
      index++;
    }
    return;
  }
  for (const key of Object.keys(items)) {
    const value = items[key];
    if (isObject(value)) visit(key, key, value);
  }
}

/** Holes read, past which an array that is mostly holes so far is walked by its keys (see forEachElement). */
const SPARSE_ARRAY_HOLES = 1024;

/**
 * Calls `visit` with each element of `items` that is an object, in order. Elements are read by index: Object.keys would make
 * a string per element, millions for a plain number[] of weights. An array mostly of holes (`cache[hash] = entry`, a length
 * of billions) is walked from there by its keys instead, which list only the elements it has. Properties of an array other
 * than its elements (a Python list has none) are not walked.
 */
function forEachElement(items: unknown[], visit: (index: number, value: object) => void): void {
  let holes = 0;
  for (let index = 0; index < items.length; index++) {
    const value = items[index];
    if (isObject(value)) visit(index, value);
    else if (value === undefined && !(index in items) && ++holes > SPARSE_ARRAY_HOLES && 2 * holes > index) {
      for (const key of Object.keys(items)) {
        const rest = Number(key);
        // Elements before `index` were visited; keys that are not elements' ("-0", "1e3", "x") are other properties.
        if (!(String(rest) === key && rest > index && rest < items.length)) continue;
        const element = items[rest];
        if (isObject(element)) visit(rest, element);
      }
      return;
    }
  }
}

function isObject(value: unknown): value is object {
  return value !== null && typeof value === "object";
}

/** A plain object (an object literal, a dictionary): like a Python dict, Module does not register the modules it holds. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * An instance of a class of the user's that is not a Module (a holder of layers): not a tensor, a parameter, or a
 * built-in (a Date, a typed array, a Promise all have their own tag), whose own properties hold no modules.
 */
function isPlainInstance(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object" || value instanceof Module || value instanceof Parameter || value instanceof Tensor) return false;
  return Object.prototype.toString.call(value) === "[object Object]";
}

/** One walk of a model, shared by getPatchableLayers and patchModel so that they see the same layers. */
interface ModelWalk {
  /** `namedModules()`: each registered module once, root first. */
  modules: [string, Module][];
  /** Every registered name of each module below the root (see reachableNames). */
  namesOf: Map<Module, string[]>;
  /** Every slot holding each registered module: its registered parents' properties, and containers and unregistered modules that also hold it. */
  slotsOf: Map<Module, Slot[]>;
  /** Modules reachable only through containers, in depth-first order. */
  unregistered: Map<Module, Unregistered>;
}

function walkModel(model: Module): ModelWalk {
  const modules = registeredModules(model);
  const registered = new Set<Module>(modules.map(([, module]) => module));
  const slotsOf = new Map<Module, Slot[]>();
  const addSlot = (module: Module, slot: Slot): void => {
    const slots = slotsOf.get(module) ?? [];
    // A container reached under several paths holds the module in one place: one slot (its first path).
    if (slots.some(({ holder, key }) => holder === slot.holder && sameSlotKey(key, slot.key))) return;
    slots.push(slot);
    slotsOf.set(module, slots);
  };
  for (const [parentName, parent] of modules) {
    for (const [key, child] of parent.childSlots()) addSlot(child, { holder: parent, key, path: childPath(parentName, key) });
  }
  const unregistered = new Map<Module, Unregistered>();
  const ancestors = new Set<unknown>();
  type Outermost = { path: string; holder: string; kind: ContainerKind; what: string };
  // Times each container was walked into: at most MAX_NAMES_PER_MODULE, as modules in reachableNames, so that
  // containers holding each other twice over ([level, level], nested 40 deep) take linear work, not 2^40 walks.
  const containerVisits = new Map<object, number>();
  // Depth first with a stack of its own: user data (a linked list, an LRU cache) can nest deeper than the call stack goes.
  // A step either leaves a node (it stops being an ancestor) or visits a value at a path in its holder.
  type Step = { leave: object } | { holder: Module | Container; key: unknown; path: string; value: object; container: Outermost | null };
  const stack: Step[] = [];
  // The steps for a module's own properties that hold containers (what they hold is not registered unless held elsewhere too).
  const containerSteps = (module: Module, path: string, container: Outermost | null): Step[] =>
    Object.keys(module).flatMap((key): Step[] => {
      const value = (module as unknown as Record<string, unknown>)[key];
      return containerKind(value) === undefined ? [] : [{ holder: module, key, path: childPath(path, key), value: value as object, container }];
    });
  const push = (steps: Step[]): void => {
    for (let i = steps.length - 1; i >= 0; i--) stack.push(steps[i]);
  };
  const visit = ({ holder, key, path, value, container }: Extract<Step, { value: object }>): void => {
    const kind = containerKind(value);
    if (kind !== undefined) {
      const items = value as Container;
      const visits = containerVisits.get(items) ?? 0;
      if (ancestors.has(items) || visits >= MAX_NAMES_PER_MODULE) return;
      containerVisits.set(items, visits + 1);
      ancestors.add(items);
      const outermost = container ?? { path, holder: className(holder), kind, what: containerName(kind, items) };
      const steps: Step[] = [];
      forEachEntry(items, (itemKey, pathKey, item) => {
        steps.push({ holder: items, key: itemKey, path: childPath(path, pathKey), value: item, container: outermost });
      });
      stack.push({ leave: items });
      push(steps);
      return;
    }
    if (!(value instanceof Module) || container === null) return;
    if (registered.has(value)) {
      addSlot(value, { holder, key, path });
      return;
    }
    if (ancestors.has(value)) return;
    const known = unregistered.get(value) ?? { paths: [], array: container.path, holder: container.holder, kind: container.kind, what: container.what };
    // At most MAX_NAMES_PER_MODULE paths each, as in reachableNames.
    if (known.paths.length >= MAX_NAMES_PER_MODULE) return;
    known.paths.push(path);
    unregistered.set(value, known);
    ancestors.add(value);
    const children = value.childSlots().map(([childKey, child]): Step => ({ holder: value, key: childKey, path: childPath(path, childKey), value: child, container }));
    stack.push({ leave: value });
    push([...children, ...containerSteps(value, path, container)]);
  };
  const walk = (steps: Step[]): void => {
    push(steps);
    for (let step = stack.pop(); step !== undefined; step = stack.pop()) {
      if ("leave" in step) ancestors.delete(step.leave);
      else visit(step);
    }
  };
  for (const [path, module] of modules) walk(containerSteps(module, path, null));
  return { modules, namesOf: reachableNames(model), slotsOf, unregistered };
}

/**
 * Why patchModel would refuse this Linear whatever the pattern (none: it can be patched): disposed
 * or misshapen parameters, state or a forward the replacement would drop, or a slot it cannot fill.
 */
function layerProblems(name: string, linear: Linear, walk: ModelWalk): string[] {
  const problem = notParameterProblem(name, linear) ?? disposedProblem(name, linear) ?? weightShapeProblem(name, linear) ?? extraStateProblem(name, linear) ?? ownForwardProblem(name, linear) ?? nonFiniteProblem(name, linear);
  if (problem !== null) return [problem];
  return (walk.slotsOf.get(linear) ?? []).map((slot) => slotProblem(name, slot)).filter((slotProblem) => slotProblem !== null);
}

/** null when `blockShape` tiles the layer's weight; else a message naming what would. */
function divisibilityProblem(name: string, linear: Linear, [blockHeight, blockWidth]: [number, number]): string | null {
  const { outFeatures, inFeatures } = linear;
  if (outFeatures % blockHeight === 0 && inFeatures % blockWidth === 0) return null;
  return (
    `'${name}' has weight [out=${outFeatures}, in=${inFeatures}], which ${blockHeight}x${blockWidth} blocks do not tile; ` +
    `block heights R that divide ${outFeatures}: ${divisors(outFeatures).join(", ")}; block widths C that divide ${inFeatures}: ${divisors(inFeatures).join(", ")}`
  );
}

/** A Linear has a bias when it holds a Parameter there: null, or undefined (a deleted bias, which its forward skips as it does null), is none. */
function hasBias(linear: Linear): boolean {
  return linear.bias != null;
}

/**
 * fromLinear reads the weight's and bias's Parameter values: a Tensor (or anything else) put in their place is not a parameter
 * of the model (Module registers only Parameters), and building the replacement from it would fail halfway.
 */
function notParameterProblem(name: string, linear: Linear): string | null {
  const wrong = (["weight", "bias"] as const).filter((slot) => !(linear[slot] instanceof Parameter) && !(slot === "bias" && linear.bias == null));
  if (wrong.length === 0) return null;
  const described = wrong.map((slot) => `'${name}.${slot}' is ${describeSlotValue(linear[slot])}`).join(", ");
  return `${described}, not a Parameter, so it is not one of the model's parameters; assign new Parameter(tensor)${wrong.includes("bias") ? " (or null for no bias)" : ""}`;
}

/** What a weight or bias slot holds, in a few words ("a Tensor", "a number"). */
function describeSlotValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value !== "object") return `a ${typeof value}`;
  return `a ${className(value)}`;
}

/** fromLinear reads the weight and shares the bias: both must be alive. */
function disposedProblem(name: string, linear: Linear): string | null {
  const dead = linear.namedOwnParameters().filter(([, parameter]) => parameter.value.isDisposed);
  return dead.length === 0 ? null : `'${name}' has disposed parameters: ${dead.map(([p]) => childPath(name, p)).join(", ")}`;
}

/** fromLinear reads the weight as [outFeatures, inFeatures] and shares a bias of [outFeatures]: other shapes would fail halfway or be read wrongly. */
function weightShapeProblem(name: string, linear: Linear): string | null {
  const shape = linear.weight.shape;
  if (shape.length !== 2 || shape[0] !== linear.outFeatures || shape[1] !== linear.inFeatures) {
    return `'${name}' has a weight of shape [${shape.join(", ")}], expected [out=${linear.outFeatures}, in=${linear.inFeatures}]`;
  }
  // The bias is shared as it is: another shape would fail at the first forward, far from the patch.
  const bias = linear.bias?.shape;
  if (bias === undefined || (bias.length === 1 && bias[0] === linear.outFeatures)) return null;
  return `'${name}' has a bias of shape [${bias.join(", ")}], expected [out=${linear.outFeatures}]`;
}

/**
 * fromLinear ranks blocks by norm and refuses a weight holding NaN or an infinity: found here, it is one of the
 * problems listed before anything changes (and in a dry run), not a ValueError halfway through the replacements.
 * One reduction on the weight's backend; the weight is read back only to name the first such value.
 */
function nonFiniteProblem(name: string, linear: Linear): string | null {
  const weight = linear.weight.value;
  // NaN when an element is NaN (max propagates it), an infinity when one is.
  const largest = noGrad(() => tidy(() => max(abs(weight)).dataSync()[0]));
  if (Number.isFinite(largest)) return null;
  const values = weight.dataSync();
  const bad = Math.max(0, values.findIndex((v) => !Number.isFinite(v)));
  const { inFeatures } = linear;
  return `'${name}.weight' holds ${values[bad]} at [${Math.floor(bad / inFeatures)}, ${bad % inFeatures}]: a non-finite weight has no strongest blocks to keep; fix or reinitialise it before patching`;
}

/** A Linear subclass's own parameters and modules besides weight and bias would be lost with it. */
function extraStateProblem(name: string, linear: Linear): string | null {
  const extra = [...linear.namedOwnParameters(), ...linear.childSlots()].map(([key]) => key).filter((key) => key !== "weight" && key !== "bias");
  return extra.length === 0 ? null : `'${name}' is a ${linear.constructor.name} that also holds ${extra.join(", ")}, which a BlockSparseLinear would drop`;
}

/** The methods a Linear computes through; a BlockSparseLinear runs its own, so another version of any would be dropped. */
const COMPUTING_METHODS = ["forward", "forwardActivation", "forwardResidual"] as const;

/** A Linear subclass (or instance) with its own forward would silently compute something else once replaced. */
function ownForwardProblem(name: string, linear: Linear): string | null {
  const own = COMPUTING_METHODS.filter((method) => linear[method] !== Linear.prototype[method]);
  if (own.length === 0) return null;
  const what = linear.constructor === Linear ? "a Linear" : `a ${linear.constructor.name}`;
  return `'${name}' is ${what} with its own ${own.join(", ")}, which a BlockSparseLinear would not run (the layer would compute something else); leave it out of the patterns`;
}

function plannedLayer(name: string, linear: Linear, pattern: NamePattern): PatchedLayer {
  const { outFeatures, inFeatures } = linear;
  const [blockHeight, blockWidth] = pattern.blockShape;
  const totalBlocks = (outFeatures / blockHeight) * (inFeatures / blockWidth);
  const keptBlocks = blockCountFor(pattern.density, totalBlocks);
  const bias = hasBias(linear) ? outFeatures : 0;
  return {
    name,
    pattern: pattern.label,
    shape: [outFeatures, inFeatures],
    density: pattern.density,
    blockShape: [blockHeight, blockWidth],
    keptBlocks,
    totalBlocks,
    keptDensity: keptBlocks / totalBlocks,
    bias: hasBias(linear),
    paramsBefore: outFeatures * inFeatures + bias,
    paramsAfter: keptBlocks * blockHeight * blockWidth + bias,
  };
}

/**
 * A patched layer's weight or bias also held by a module that stays (one not patched, or one
 * held only in a container Module does not register) would silently be untied. The problems, by patched layer
 * (`patched` maps each to the name it is reported under).
 */
function sharingProblems(walk: ModelWalk, patched: ReadonlyMap<Module, string>): Map<Module, string[]> {
  const owners = new Map<Parameter, string[]>();
  const staying: [string, Module][] = [...walk.modules, ...[...walk.unregistered].map(([module, { paths }]): [string, Module] => [paths[0], module])];
  for (const [name, module] of staying) {
    if (patched.has(module)) continue;
    for (const [parameterName, parameter] of module.namedOwnParameters()) {
      const list = owners.get(parameter) ?? [];
      list.push(childPath(name, parameterName));
      owners.set(parameter, list);
    }
  }
  const problems = new Map<Module, string[]>();
  for (const [module, name] of patched) {
    for (const [parameterName, parameter] of module.namedOwnParameters()) {
      const others = owners.get(parameter);
      if (others === undefined) continue;
      const list = problems.get(module) ?? [];
      list.push(`'${name}.${parameterName}' is shared with ${others.join(", ")}, which would stay dense; patching would untie them`);
      problems.set(module, list);
    }
  }
  return problems;
}

/**
 * A weight tied between two patched layers stays one parameter only when both get the same
 * pattern, which needs the same density and block shape.
 */
function tyingProblems(plans: Plan[]): string[] {
  const first = new Map<Parameter, Plan>();
  const problems: string[] = [];
  for (const plan of plans) {
    const earlier = first.get(plan.linear.weight);
    if (earlier === undefined) {
      first.set(plan.linear.weight, plan);
      continue;
    }
    const [a, b] = [earlier.layer, plan.layer];
    if (earlier.linear !== plan.linear && (a.density !== b.density || a.blockShape[0] !== b.blockShape[0] || a.blockShape[1] !== b.blockShape[1])) {
      problems.push(
        `'${b.name}.weight' is tied to '${a.name}.weight' but they would be patched with different settings ` +
          `(density ${b.density} vs ${a.density}, blocks ${b.blockShape.join("x")} vs ${a.blockShape.join("x")}); match both with one pattern to keep the tie`,
      );
    }
  }
  return problems;
}

/** Every slot holding a patched Linear must take its replacement as registerModule (or an array, object or Map) sets it, or the patch would stop halfway. */
function slotProblem(name: string, { holder, key: slotKey, path }: Slot): string | null {
  // Map.set takes any key, frozen Map or not; a key itself is not rewritten (the Map would keep the dense layer as its key).
  if (holder instanceof Map) {
    return slotKey instanceof MapKey ? `'${path}' is a key of a Map, which the patcher does not rewrite, so the replacement of '${name}' cannot be put there` : null;
  }
  // The patcher does not rewrite these: the holder would keep the dense layer, and a forward reading it run the old weights.
  if (holder instanceof Set) return `'${path}' is an element of a Set, which the patcher does not rewrite, so the replacement of '${name}' cannot be put there`;
  if (!(holder instanceof Module) && containerKind(holder) === "instance") {
    return `'${path}' is a property of a ${className(holder)}, which is not a Module and which the patcher does not rewrite, so the replacement of '${name}' cannot be put there`;
  }
  const key = slotKey as string;
  const descriptor = Object.getOwnPropertyDescriptor(holder, key);
  const readOnly = descriptor?.writable === false || (descriptor?.get !== undefined && descriptor.set === undefined);
  if (Array.isArray(holder)) {
    return readOnly ? `'${path}' is an element of a frozen array, so the replacement of '${name}' cannot be put there` : null;
  }
  if (!(holder instanceof Module)) {
    return readOnly ? `'${path}' is a read-only property of a plain object, so the replacement of '${name}' cannot be put there` : null;
  }
  if (key.includes(".")) {
    return `'${path}' is held under the property ${JSON.stringify(key)}, which registerModule cannot set (a name must have no dots); rename the property`;
  }
  return readOnly ? `'${path}' is a read-only property of ${holder.constructor.name}, so its replacement cannot be put there` : null;
}

/** Elements of the patched layers' parameters before and after, each parameter once (a tie is one, as parameterCount counts it). */
function parameterTotals(plans: Plan[]): { paramsBefore: number; paramsAfter: number } {
  const seen = new Set<Parameter>();
  let paramsBefore = 0;
  let paramsAfter = 0;
  for (const { linear, layer } of plans) {
    const [outFeatures, inFeatures] = layer.shape;
    if (!seen.has(linear.weight)) {
      seen.add(linear.weight);
      paramsBefore += outFeatures * inFeatures;
      paramsAfter += layer.keptBlocks * layer.blockShape[0] * layer.blockShape[1];
    }
    if (linear.bias != null && !seen.has(linear.bias)) {
      seen.add(linear.bias);
      paramsBefore += outFeatures;
      paramsAfter += outFeatures;
    }
  }
  return { paramsBefore, paramsAfter };
}

/**
 * Builds every replacement first, then swaps them in: every slot that holds a patched
 * Linear (a parent's property, a plain array's element, a plain object's property or a Map's value) gets its replacement. Parameters
 * tied between patched layers (weight or bias) stay tied: later replacements reuse the first
 * one's new parameter. A build that fails (out of device memory, say) leaves the model
 * untouched and disposes the replacements built so far, which nothing else holds.
 */
function replaceLayers(walk: ModelWalk, plans: Plan[]): void {
  const replacements = new Map<Module, BlockSparseLinear>();
  const replacedParameters = new Map<Parameter, Parameter>();
  try {
    for (const { linear, layer } of plans) {
      if (replacements.has(linear)) continue;
      const replacement = BlockSparseLinear.fromLinear(linear, { density: layer.density, blockShape: layer.blockShape });
      // A new module is in training mode: the replacement keeps the mode of the layer it replaces (a model put in eval stays so).
      replacement.training = linear.training;
      for (const name of ["weight", "bias"] as const) {
        const original = linear[name];
        const made = replacement[name];
        if (original == null || made === null) continue;
        const tied = replacedParameters.get(original);
        if (tied === undefined) replacedParameters.set(original, made);
        else {
          replacement.registerParameter(name, tied);
          made.dispose();
        }
      }
      replacements.set(linear, replacement);
    }
  } catch (error) {
    for (const parameter of replacedParameters.values()) parameter.dispose();
    throw error;
  }
  for (const [linear, replacement] of replacements) {
    for (const { holder, key } of walk.slotsOf.get(linear) ?? []) {
      // registerModule refuses the name "" (nn would name the module as its holder); slotProblem checked the slot, so it is assigned as the model's code put it there.
      if (holder instanceof Module && key !== "") holder.registerModule(key as string, replacement);
      else if (holder instanceof Map) holder.set(key, replacement);
      else (holder as Record<string, unknown>)[key as string] = replacement;
    }
  }
}

/** Disposes each replaced Linear's parameters once (a Linear or a parameter may appear in several plans). */
function disposeParameters(plans: Plan[]): void {
  const parameters = new Set<Parameter>();
  for (const { linear } of plans) for (const parameter of linear.parameters()) parameters.add(parameter);
  for (const parameter of parameters) parameter.dispose();
}
