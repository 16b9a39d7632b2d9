import { optionsArg, ValueError } from "@blocksparse/core";
import { checkDistributedEnv, type DistributedEnv, defaultJobId } from "./env";
import { DistributedEnvError, DistributedError, StoreError, StoreTimeoutError } from "./errors";
import { type StoreTimeout, TcpStore, TcpStoreServer } from "./store";

/** Default time a rank waits for its peers in a rendezvous or a collective: 5 minutes. */
export const DEFAULT_TIMEOUT_MS = 300_000;

/** The ranks this process holds, as `<job id> <store address> <rank>`: from the start of their join until they close. */
const HELD_HERE = new Set<string>();

/** What failed on this process's side of the job, that gives back what a join took: the join itself, a group's setup after it, a destroy. */
type GivenBackBy = "join" | "setup" | "destroy";

/**
 * Ranks (as in HELD_HERE) whose failed join, group setup or destroy here could not give the rank back to the store (it
 * did not answer): a retry finds the rank taken, and is told why.
 */
const NOT_GIVEN_BACK = new Map<string, GivenBackBy>();

/** How a join refused for NOT_GIVEN_BACK names what failed. */
const FAILED_EARLIER: Record<GivenBackBy, string> = {
  join: "an earlier join of this rank",
  setup: "the setup of an earlier process group of this rank (after its join)",
  destroy: "an earlier destroy of this rank's process group",
};

/** Added to an attempt's count by a rank that gives the attempt up: no count can reach WORLD_SIZE after it. */
const GIVEN_UP = -(2 ** 40);

/** How long a failed join may take to give back what it took from the store (its own timeout has passed by then). */
const GIVE_BACK_MS = 5000;

/** What settles an attempt at forming the group (JSON under its `rendezvous/outcome` key). */
type Outcome = { formed: true } | { formed: false; rank: number; reason: string; error: string };

/** The keys of a rank's `joins`-th join (its first, or the first after each destroy): the first join's have no prefix. */
function joinPrefix(joins: number): string {
  return joins > 1 ? `join${joins}/` : "";
}

/** The keys of attempt `attempt` of a formation whose keys start with `keyPrefix`: the first attempt's are the formation's own. */
function attemptPrefix(keyPrefix: string, attempt: number): string {
  return attempt === 0 ? keyPrefix : `${keyPrefix}attempt${attempt}/`;
}

/** `Rendezvous.collect` ran out of time: `ranks` are the ranks whose values had not come (still a StoreTimeoutError). */
export class CollectTimeoutError extends StoreTimeoutError {
  constructor(
    readonly ranks: readonly number[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * One rank's place in the job: its connection to the store (and the store itself on the rank
 * that hosts it), and the two moves every exchange is made of: publish bytes under a key for
 * a number of readers, and collect what other ranks published under a key.
 */
export class Rendezvous {
  private constructor(
    readonly store: TcpStore,
    readonly rank: number,
    readonly worldSize: number,
    readonly timeoutMs: number,
    private readonly server: TcpStoreServer | null,
    /** Whether rank 0's process hosts the store (no launcher does): it then waits for the others to leave before closing it. */
    private readonly rankHostsStore: boolean,
    /** Put before every key this rendezvous publishes or collects: "" for a rank's first join, "join<n>/" for its n-th. */
    private readonly keyPrefix: string,
    /** This rank's entry in HELD_HERE, given back on close. */
    private readonly heldHere: string,
    /** The attempt of this formation that formed the group (the ones before were given up by a rank whose join failed). */
    private readonly attempt = 0,
  ) {}

  /**
   * Joins the job described by `env`: rank 0 starts the store on MASTER_ADDR:MASTER_PORT (unless
   * the launcher hosts it), every rank connects (a store of another job, `env.jobId`, refuses it:
   * a StoreJobMismatchError), and the ranks check that they agree on the world size and that no
   * rank number is taken twice. All of it within one `joinTimeoutMs` (default `timeoutMs`, which
   * then bounds each wait of the group it returns): past it, a
   * StoreTimeoutError naming what was being waited for. From then on the store knows this
   * connection as this rank's: if it closes before `shutdown`, every rank's waits fail at once
   * with a RankFailedError naming this rank.
   *
   * The group forms on every rank or on none: a join that fails gives the attempt up (a peer that
   * had every rank's world size then waits for the next attempt instead of taking the group for
   * formed) and gives back what it took (its rank, its join count, its world size, its place in the
   * store), so that it may be called again, in this process or a restarted one, and meet the peers
   * still waiting or joining again.
   */
  static async join(env: DistributedEnv, options: { timeoutMs?: number; joinTimeoutMs?: number } = {}): Promise<Rendezvous> {
    options = optionsArg("Rendezvous.join", options, ["timeoutMs", "joinTimeoutMs"]);
    checkDistributedEnv("Rendezvous.join", env);
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new ValueError(`timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`);
    // The join alone may wait longer (or shorter) than the group's collectives: ranks start at different times.
    const joinTimeoutMs = options.joinTimeoutMs ?? timeoutMs;
    if (!(Number.isFinite(joinTimeoutMs) && joinTimeoutMs > 0)) throw new ValueError(`joinTimeoutMs must be a positive number of milliseconds, got ${String(joinTimeoutMs)}`);
    const wait: StoreTimeout = { timeoutMs: joinTimeoutMs, deadline: Date.now() + joinTimeoutMs };
    // The store's handshake checks it: a rank that reaches another job's store (one port given to two jobs) fails instead of joining.
    const jobId = env.jobId ?? defaultJobId(env.worldSize);
    // A second join of a rank this process holds (initProcessGroup called twice, the first group not destroyed) was
    // refused as another process using the rank, or on rank 0 as a port taken "perhaps by another job's store".
    const heldHere = `${jobId} ${env.masterAddr}:${env.masterPort} ${env.rank}`;
    if (HELD_HERE.has(heldHere)) {
      throw new DistributedEnvError(
        `RANK=${env.rank} of this job is already held by this process, in a process group it has not destroyed: initProcessGroup was called twice. Use the group it returned, or destroy it (await group.destroy() on every rank) before joining again`,
      );
    }
    HELD_HERE.add(heldHere);
    let server: TcpStoreServer | null = null;
    let store: TcpStore;
    try {
      server = env.rank === 0 && !env.launcherStore ? await TcpStoreServer.listenForJob(env.masterAddr, env.masterPort, { jobId }) : null;
      // Without the launcher, rank 0's process hosts the store: the store closing means rank 0 is gone.
      store = await TcpStore.connect(env.masterAddr, env.masterPort, { timeoutMs: wait, hostRank: env.launcherStore ? undefined : 0, jobId });
    } catch (error) {
      HELD_HERE.delete(heldHere);
      await server?.close();
      throw error;
    }
    // What this join took from the store so far: given back if it fails.
    const taken = { rank: false, joinCount: false, member: false };
    try {
      // Counts the processes holding this rank now: destroy gives the rank back, so that it may join again.
      if ((await store.add(`rendezvous/rank/${env.rank}`, 1, { timeoutMs: wait })) > 1) {
        // Given back at once: the process that holds the rank may still destroy its group and join again.
        await store.add(`rendezvous/rank/${env.rank}`, -1, { timeoutMs: wait }).catch(() => {});
        const failed = NOT_GIVEN_BACK.get(heldHere);
        if (failed !== undefined) {
          throw new DistributedEnvError(
            `RANK=${env.rank}: ${FAILED_EARLIER[failed]} in this process failed and could not give the rank back to the store (the store did not answer), so the store still counts it as held: ${failed === "join" ? "a join that failed so cannot be retried" : "the rank cannot join again"} in this process; restart the process (or the job)`,
          );
        }
        throw new DistributedEnvError(`RANK=${env.rank} is used by two processes of this job: each process needs its own RANK in [0, ${env.worldSize - 1}]`);
      }
      taken.rank = true;
      NOT_GIVEN_BACK.delete(heldHere);
      // A rank that joins again after destroy (as torch allows) uses fresh keys: values a failed collective left behind are not read.
      const joins = await store.add(`rendezvous/joins/${env.rank}`, 1, { timeoutMs: wait });
      taken.joinCount = true;
      const keyPrefix = joinPrefix(joins);
      // After the check above: a second process given the same RANK must not make the store take the first for gone.
      await store.join(env.rank, { timeoutMs: wait });
      taken.member = true;
      // Why the attempts this rank was in were given up by a peer: said if this rank's own timeout then passes.
      const givenUp: string[] = [];
      for (;;) {
        const attempt = await store.add(`${keyPrefix}rendezvous/attempt`, 0, { timeoutMs: wait });
        const probe = new Rendezvous(store, env.rank, env.worldSize, joinTimeoutMs, server, !env.launcherStore, attemptPrefix(keyPrefix, attempt), heldHere, attempt);
        const outcome = await probe.#attempt(keyPrefix, joins, wait, givenUp);
        if (outcome.formed) return new Rendezvous(store, env.rank, env.worldSize, timeoutMs, server, !env.launcherStore, keyPrefix, heldHere, attempt);
        // A peer's join failed: this rank's own timeout still runs, and the peer (or the rank that replaces it) may join again.
        givenUp.push(`rank ${outcome.rank}'s join failed meanwhile (${outcome.reason})`);
      }
    } catch (error) {
      // Given back as one batch within one short wait: this rank's own timeout may have passed.
      const grace = Math.min(joinTimeoutMs, GIVE_BACK_MS);
      const giveBack: StoreTimeout = { timeoutMs: grace, deadline: Date.now() + grace };
      const returned = await Promise.allSettled([
        taken.joinCount ? store.add(`rendezvous/joins/${env.rank}`, -1, { timeoutMs: giveBack }) : null,
        taken.rank ? store.add(`rendezvous/rank/${env.rank}`, -1, { timeoutMs: giveBack }) : null,
        // Left, not gone: the store does not fail the peers' waits for a rank that may join again.
        taken.member ? store.leave({ timeoutMs: giveBack }) : null,
      ]);
      if (taken.rank && returned.some((result) => result.status === "rejected")) NOT_GIVEN_BACK.set(heldHere, "join");
      HELD_HERE.delete(heldHere);
      store.close();
      await server?.close();
      throw error;
    }
  }

  /**
   * One attempt at forming the group, under keys of its own: each rank publishes its world size, reads the others',
   * then counts itself in; the rank whose count completes WORLD_SIZE says the group formed. A rank that fails first
   * (its timeout passes) gives the attempt up: its count makes WORLD_SIZE unreachable (the store adds atomically, so
   * either the group formed for every rank or for none), and it says so to the ranks still in the attempt, which
   * then move on to the next one. Resolves with how the attempt ended.
   */
  async #attempt(formationPrefix: string, joins: number, wait: StoreTimeout, givenUp: readonly string[]): Promise<Outcome> {
    const worldKey = "rendezvous/world";
    const countKey = `${this.keyPrefix}rendezvous/count`;
    const outcomeKey = `${this.keyPrefix}rendezvous/outcome`;
    const others = this.others();
    // Gets of a given-up attempt's keys are given up here too: no one else reads them.
    const controller = new AbortController();
    // Asked before anything is published: its answer comes once, when the group forms or a rank gives the attempt up.
    const outcome = this.store.get(outcomeKey, wait, { signal: controller.signal }).then(
      (bytes) => ({ outcome: JSON.parse(new TextDecoder().decode(bytes)) as Outcome }),
      (error: unknown) => ({ error }),
    );
    let counted = false;
    try {
      await this.publish(worldKey, new TextEncoder().encode(String(this.worldSize)), others.length, wait);
      const collecting = this.collect(worldKey, others, wait, controller.signal);
      collecting.catch(() => {});
      // Only a given-up attempt's outcome can come before this rank counts itself in; a failed get of it is the collect's to tell.
      const givenUpFirst = outcome.then((settled) => ("outcome" in settled ? settled : new Promise<never>(() => {})));
      const first = await Promise.race([collecting.then((sizes) => ({ sizes })), givenUpFirst]);
      if ("outcome" in first) {
        await this.#leaveAttempt();
        return this.#peerOutcome(first.outcome);
      }
      for (const [peer, bytes] of first.sizes) {
        const theirs = new TextDecoder().decode(bytes);
        if (theirs !== String(this.worldSize)) {
          throw new DistributedEnvError(`rank ${peer} has WORLD_SIZE=${theirs} but rank ${this.rank} has WORLD_SIZE=${this.worldSize}: every rank must be started with the same WORLD_SIZE`);
        }
      }
      counted = true;
      if ((await this.store.add(countKey, 1, { timeoutMs: wait })) === this.worldSize) {
        // Read once by every rank of the attempt (each asked for it first), then gone.
        await this.store.set(outcomeKey, new TextEncoder().encode(JSON.stringify({ formed: true })), { reads: this.worldSize, timeoutMs: wait });
        await this.#dropSpentKeys(formationPrefix, joins, wait);
      }
      const settled = await outcome;
      if ("error" in settled) throw settled.error;
      if (settled.outcome.formed) return settled.outcome;
      await this.#leaveAttempt();
      return this.#peerOutcome(settled.outcome);
    } catch (error) {
      controller.abort();
      const grace = Math.min(this.timeoutMs, GIVE_BACK_MS);
      const giveBack: StoreTimeout = { timeoutMs: grace, deadline: Date.now() + grace };
      let before: number | null = null;
      try {
        before = (await this.store.add(countKey, GIVEN_UP, { timeoutMs: giveBack })) - GIVEN_UP;
        // Every rank had counted itself in, this one too, before its wait for the word ran out: the group formed.
        if (before === this.worldSize) return { formed: true };
        if (before >= 0) {
          // The first to give the attempt up: the next attempt is opened before the ranks still in this one hear of it.
          const reason = error instanceof StoreTimeoutError ? `it timed out after ${this.timeoutMs / 1000} s` : error instanceof Error ? error.message : String(error);
          const said: Outcome = { formed: false, rank: this.rank, reason, error: error instanceof Error ? error.name : "Error" };
          await this.store.add(`${formationPrefix}rendezvous/attempt`, 1, { timeoutMs: giveBack });
          await this.store.set(outcomeKey, new TextEncoder().encode(JSON.stringify(said)), { timeoutMs: giveBack });
        }
        await this.#leaveAttempt(giveBack);
      } catch {
        // The store did not take it back (gone, or not answering): the join's own error says what failed.
      }
      // A count below 0: a peer gave the attempt up first, and its word had not come yet.
      throw this.#explainJoinFailure(error, counted && before !== null && before >= 0 ? before : null, givenUp);
    } finally {
      controller.abort();
    }
  }

  /**
   * Deletes the join keys no rank reads once this attempt has formed the group (every rank counted itself in it): each
   * earlier attempt's count and outcome (attempts given up), and what the formation of the ranks' previous group left
   * (its attempt number and count: deleted at its destroy, unless its setup or destroy failed). Retries thus leave the
   * store no larger. Best effort: a store that does not answer fails what comes next anyway.
   */
  async #dropSpentKeys(formationPrefix: string, joins: number, wait: StoreTimeout): Promise<void> {
    const keys: string[] = [];
    for (let attempt = 0; attempt < this.attempt; attempt++) keys.push(`${attemptPrefix(formationPrefix, attempt)}rendezvous/count`, `${attemptPrefix(formationPrefix, attempt)}rendezvous/outcome`);
    try {
      if (joins > 1) {
        const previous = joinPrefix(joins - 1);
        const formed = await this.store.add(`${previous}rendezvous/attempt`, 0, { timeoutMs: wait });
        keys.push(`${previous}rendezvous/attempt`, `${attemptPrefix(previous, formed)}rendezvous/count`);
      }
      await Promise.all(keys.map((key) => this.store.deleteKey(key, { timeoutMs: wait })));
    } catch {
      // Left in the store: harmless to later joins, which use keys of their own.
    }
  }

  /** Deletes this rank's world size of an attempt given up (read by no one now: a peer that joins later would take it for this rank's). */
  async #leaveAttempt(wait: StoreTimeout = this.wait()): Promise<void> {
    await this.store.deleteKey(`${this.keyPrefix}rendezvous/world/${this.rank}`, { timeoutMs: wait }).catch(() => {});
  }

  /** A peer gave the attempt up: this rank moves on after a timeout, or fails with the peer's error after another failure. */
  #peerOutcome(outcome: Outcome): Outcome {
    if (outcome.formed || outcome.error === "StoreTimeoutError") return outcome;
    const message = `Rendezvous.join: rank ${outcome.rank}'s join failed: ${outcome.reason}`;
    throw outcome.error === "DistributedEnvError" ? new DistributedEnvError(message) : new DistributedError(message);
  }

  /** A join's failure as its caller reads it: a timeout says which ranks did not join, and what the peers' joins did meanwhile. */
  #explainJoinFailure(error: unknown, counted: number | null, givenUp: readonly string[]): unknown {
    if (!(error instanceof StoreTimeoutError)) return error;
    const meanwhile = givenUp.length === 0 ? "" : `; ${givenUp.join("; ")}, and it did not join again`;
    // Said as what it is: "store get 'rendezvous/world/2': no rank set it" did not say that rank 2 never joined.
    const what = counted === null ? error.message : `every rank had published its world size, but only ${counted} of ${this.worldSize} had counted themselves in (${error.message})`;
    return new StoreTimeoutError(
      `Rendezvous.join: rank ${this.rank} of WORLD_SIZE=${this.worldSize} waited ${this.timeoutMs / 1000} s for the other ranks to join: ${what}${meanwhile}; is every rank started, with the same MASTER_ADDR, MASTER_PORT, WORLD_SIZE and BLOCKSPARSE_JOB_ID?`,
      { cause: error },
    );
  }

  /** The timeout of one exchange, starting now: steps given it share one deadline. */
  wait(): StoreTimeout {
    return { timeoutMs: this.timeoutMs, deadline: Date.now() + this.timeoutMs };
  }

  /**
   * The deadline a destroy's steps share (a process group's marker, then `shutdown`): destroy takes `timeoutMs` at most in
   * all, its last quarter (5 s at most) kept for giving the rank back when a step fails.
   */
  shutdownWait(): { timeoutMs: number; deadline: number } {
    return { timeoutMs: this.timeoutMs, deadline: Date.now() + this.timeoutMs - giveBackReserve(this.timeoutMs) };
  }

  /** Sets `key/<rank>` to `value`, dropped once `readers` ranks have read it. */
  async publish(key: string, value: Uint8Array, readers: number, wait: StoreTimeout = this.wait()): Promise<void> {
    if (readers > 0) await this.store.set(`${this.keyPrefix}${key}/${this.rank}`, value, { reads: readers, timeoutMs: wait });
  }

  /**
   * What each of `ranks` published under `key`, waiting up to the timeout for all of them. Past it, a StoreTimeoutError
   * naming every rank still waited for (the first missing key alone named one of them). `signal` gives the wait up.
   */
  async collect(key: string, ranks: readonly number[], wait: StoreTimeout = this.wait(), signal?: AbortSignal): Promise<Map<number, Uint8Array>> {
    // Settled together: the gets share one deadline, and a rank found gone fails every one of them at once.
    const settled = await Promise.allSettled(ranks.map((peer) => this.store.get(`${this.keyPrefix}${key}/${peer}`, wait, { signal })));
    const failed = ranks.flatMap((peer, i) => {
      const result = settled[i];
      return result.status === "rejected" ? [{ peer, error: result.reason as unknown }] : [];
    });
    if (failed.length > 0) {
      const other = failed.find(({ error }) => !(error instanceof StoreTimeoutError));
      if (other !== undefined) throw other.error;
      const first = failed[0].error as StoreTimeoutError;
      const missing = failed.map(({ peer }) => peer);
      throw new CollectTimeoutError(missing, `${first.message} (still waiting for rank${missing.length > 1 ? "s" : ""} ${missing.join(", ")})`, { cause: first });
    }
    return new Map(ranks.map((peer, i) => [peer, (settled[i] as PromiseFulfilledResult<Uint8Array>).value]));
  }

  /** Deletes what this rank published under `key` (`key/<rank>`): best left to callers that know no rank will read it. */
  async unpublish(key: string, wait: StoreTimeout = this.wait()): Promise<void> {
    await this.store.deleteKey(`${this.keyPrefix}${key}/${this.rank}`, { timeoutMs: wait });
  }

  /** Adds `delta` to the counter `key` that every rank of the group shares, and returns its new value. */
  count(key: string, delta: number, wait: StoreTimeout = this.wait()): Promise<number> {
    return this.store.add(`${this.keyPrefix}${key}`, delta, { timeoutMs: wait });
  }

  /** Sets `key`, shared by every rank of the group (not one rank's own, as `publish`'s), dropped once `reads` gets read it. */
  async share(key: string, value: Uint8Array, reads: number, wait: StoreTimeout = this.wait()): Promise<void> {
    await this.store.set(`${this.keyPrefix}${key}`, value, { reads, timeoutMs: wait });
  }

  /** The shared `key`'s value, waiting until a rank sets it: up to `wait` (undefined: without a limit), or until `signal`. */
  read(key: string, wait?: StoreTimeout, signal?: AbortSignal): Promise<Uint8Array> {
    return this.store.get(`${this.keyPrefix}${key}`, wait, { signal });
  }

  /** Deletes the shared `key` (a value or a counter). */
  async drop(key: string, wait: StoreTimeout = this.wait()): Promise<void> {
    await this.store.deleteKey(`${this.keyPrefix}${key}`, { timeoutMs: wait });
  }

  /** Every other rank's `value` under `key` (each rank publishes its own and reads the rest), within one timeout. */
  async exchange(key: string, value: Uint8Array, wait: StoreTimeout = this.wait()): Promise<Map<number, Uint8Array>> {
    const others = this.others();
    await this.publish(key, value, others.length, wait);
    return this.collect(key, others, wait);
  }

  /** The ranks other than this one, ascending. */
  others(): number[] {
    return Array.from({ length: this.worldSize }, (_, r) => r).filter((r) => r !== this.rank);
  }

  /**
   * Leaves the job: waits until every rank is leaving, then each tells the store it leaves in
   * order and closes its connection; the rank hosting the store closes it last, once every other
   * rank said it is done with it. A rank that closes without this is taken for gone. `ownKeys`:
   * keys this rank published that no rank reads once every rank is leaving (a destroy's marker),
   * deleted then, so that a store that outlives the group (the launcher's) does not keep them.
   *
   * When it fails (a peer that does not call destroy within the timeout), this rank still leaves:
   * it gives back its rank and its place in the store, as a failed join does, so that the job may
   * form a group again; a timeout says which ranks it waited for, and whether the rank was given back.
   */
  async shutdown(ownKeys: readonly string[] = [], wait = this.shutdownWait()): Promise<void> {
    const given = { rank: false, place: false };
    // What the peers are waited for to do, at the steps that wait for them (a timeout elsewhere is the store's).
    let waitingFor: string | null = null;
    try {
      await this.publish("shutdown/arrived", new Uint8Array(0), this.worldSize - 1, wait);
      waitingFor = "call destroy";
      await this.collect("shutdown/arrived", this.others(), wait);
      waitingFor = null;
      // Every rank has passed its publishes: what only a peer still in a collective could have read is dropped.
      for (const key of ownKeys) await this.store.deleteKey(`${this.keyPrefix}${key}/${this.rank}`, { timeoutMs: wait });
      // Every rank is past its join: the formation's shared keys go.
      if (this.rank === 0) await Promise.all(this.#formationKeys().map((key) => this.store.deleteKey(key, { timeoutMs: wait })));
      // The rank is free again: a later join with it in this job (a store the launcher hosts outlives the group) is not a duplicate.
      await this.store.add(`rendezvous/rank/${this.rank}`, -1, { timeoutMs: wait });
      given.rank = true;
      // Before "left": once the others said they left, the rank hosting the store may close it.
      await this.store.leave({ timeoutMs: wait });
      given.place = true;
      // Only a rank hosting the store waits for the others to leave: a store the launcher hosts would keep each "left" unread.
      if (this.server !== null) {
        waitingFor = "leave";
        await this.collect("shutdown/left", this.others(), wait);
      } else if (this.rankHostsStore) await this.publish("shutdown/left", new Uint8Array(0), 1, wait);
    } catch (error) {
      const reserve = giveBackReserve(this.timeoutMs);
      const givenBack = await this.#giveBack("destroy", given, { timeoutMs: reserve, deadline: wait.deadline + reserve });
      if (!(error instanceof StoreTimeoutError)) throw error;
      const what = waitingFor === null ? `: ${error.message}` : ` waited ${this.timeoutMs / 1000} s for the other ranks to ${waitingFor}: ${error.message}`;
      const after = givenBack
        ? "this rank left the job and gave its rank back: initProcessGroup may be called again (on every rank)"
        : "the store did not answer when the rank was given back, so a store that outlives the group still counts it as held: restart this process to join the job again";
      throw new StoreTimeoutError(`destroy: rank ${this.rank} of WORLD_SIZE=${this.worldSize}${what}; ${after}`, { cause: error });
    }
    await this.close();
  }

  /**
   * Leaves the job at once, without waiting for the peers: for a group whose setup failed after the join (the NCCL
   * group's communicator). As a failed join does, it gives back the rank and its place in the store (it leaves, so the
   * store does not take it for gone and the job may form a group again), then closes the connection; the join count
   * stays, so that the next join uses keys of its own, as after destroy. Resolves with whether the store took the rank
   * back: when it did not answer, a later join of this rank in this process is refused, saying so.
   */
  abort(): Promise<boolean> {
    return this.#giveBack("setup", { rank: false, place: false });
  }

  /** Gives back what `given` says is still held (the rank, the place in the store) within a short wait, then closes. */
  async #giveBack(by: GivenBackBy, given: { rank: boolean; place: boolean }, wait = graceFrom(Math.min(this.timeoutMs, GIVE_BACK_MS))): Promise<boolean> {
    const returned = await Promise.allSettled([
      given.rank ? null : this.store.add(`rendezvous/rank/${this.rank}`, -1, { timeoutMs: wait }),
      // Left, not gone: the store does not fail the peers' waits for a rank that may join again.
      given.place ? null : this.store.leave({ timeoutMs: wait }),
    ]);
    const givenBack = returned.every((result) => result.status === "fulfilled");
    await this.close();
    if (!givenBack) NOT_GIVEN_BACK.set(this.heldHere, by);
    return givenBack;
  }

  /**
   * The keys every rank of this formation shared while joining that are still in the store: the attempt number and the
   * formed attempt's count (the attempts given up before it were deleted when it formed; its outcome went with its last read).
   */
  #formationKeys(): string[] {
    return [`${this.keyPrefix}rendezvous/attempt`, `${attemptPrefix(this.keyPrefix, this.attempt)}rendezvous/count`];
  }

  /** Closes at once, giving nothing back: the store takes this rank for gone once it joined (`abort` leaves instead). */
  async close(): Promise<void> {
    HELD_HERE.delete(this.heldHere);
    this.store.close();
    await this.server?.close();
  }
}

/** The part of a destroy's timeout kept for giving the rank back after a failed step. */
function giveBackReserve(timeoutMs: number): number {
  return Math.min(GIVE_BACK_MS, timeoutMs / 4);
}

/** A wait of `ms` from now (this rank's own timeout may have passed). */
function graceFrom(ms: number): StoreTimeout {
  return { timeoutMs: ms, deadline: Date.now() + ms };
}

/** Wraps a store failure met during `what` as the error type the caller throws, keeping the cause. */
export function explainStoreFailure(error: unknown, make: (message: string) => Error, what: string): unknown {
  if (!(error instanceof StoreError)) return error;
  const wrapped = make(`${what}: ${error.message}`);
  (wrapped as Error & { cause?: unknown }).cause = error;
  return wrapped;
}
