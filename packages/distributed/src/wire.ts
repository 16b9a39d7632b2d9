import { ValueError } from "@blocksparse/core";
import { StoreProtocolError } from "./errors";

/**
 * The framing of the store's TCP protocol: each message is a JSON header and a binary payload,
 * [u32 header bytes][u32 payload bytes][header][payload], big-endian lengths.
 */

/**
 * The version of the store's requests and answers, sent in the `hello` every connection opens
 * with. The hello itself ({op: "hello", id, protocol, jobId?} answered {id, ok, protocol, reason?,
 * error?}) keeps its shape in every version, so that two versions always refuse each other in
 * words instead of misreading each other's requests.
 */
export const STORE_PROTOCOL_VERSION = 1;

/** Headers are small JSON objects; a longer one means the peer speaks another protocol. */
export const MAX_HEADER_BYTES = 64 * 1024;

/**
 * The largest payload one frame carries: what its u32 length holds. A field rather than a
 * constant so that tests can lower it instead of allocating 4 GiB; larger values are refused
 * before anything is sent (the CPU group splits its messages to fit).
 */
export const wireLimits = { maxPayloadBytes: 0xffff_ffff };

export interface Frame {
  header: Record<string, unknown>;
  payload: Uint8Array;
}

/** Encodes one frame; a ValueError, before anything is sent, when the header or payload is more than a frame holds. */
export function encodeFrame(header: Record<string, unknown>, payload: Uint8Array = new Uint8Array(0)): Buffer[] {
  const headerBytes = Buffer.from(JSON.stringify(header), "utf8");
  if (headerBytes.length > MAX_HEADER_BYTES) throw new ValueError(`a store message header of ${headerBytes.length} bytes is more than a frame holds (at most ${MAX_HEADER_BYTES})`);
  if (payload.byteLength > wireLimits.maxPayloadBytes) {
    throw new ValueError(`a store message of ${payload.byteLength} bytes is more than a frame holds (at most ${wireLimits.maxPayloadBytes}); split it`);
  }
  const lengths = Buffer.alloc(8);
  lengths.writeUInt32BE(headerBytes.length, 0);
  lengths.writeUInt32BE(payload.byteLength, 4);
  return [lengths, headerBytes, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)];
}

/** Collects the chunks of a socket and hands out whole frames. */
export class FrameReader {
  #chunks: Buffer[] = [];
  #buffered = 0;

  /** Adds a chunk; returns the frames it completed. Throws a StoreProtocolError on a frame this protocol cannot hold. */
  push(chunk: Buffer): Frame[] {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.#buffered < 8) return frames;
      const head = this.#peek(8);
      const headerBytes = head.readUInt32BE(0);
      const payloadBytes = head.readUInt32BE(4);
      if (headerBytes > MAX_HEADER_BYTES) throw new StoreProtocolError(`a frame header of ${headerBytes} bytes (at most ${MAX_HEADER_BYTES}): not this store's protocol`);
      if (this.#buffered < 8 + headerBytes + payloadBytes) return frames;
      const whole = this.#take(8 + headerBytes + payloadBytes);
      let header: unknown;
      try {
        header = JSON.parse(whole.subarray(8, 8 + headerBytes).toString("utf8"));
      } catch (error) {
        throw new StoreProtocolError(`a frame header that is not JSON (${(error as Error).message})`);
      }
      if (header === null || typeof header !== "object" || Array.isArray(header)) throw new StoreProtocolError("a frame header that is not a JSON object");
      // Copied out, so that the payload does not pin the socket's chunk and is aligned for typed arrays.
      frames.push({ header: header as Record<string, unknown>, payload: new Uint8Array(whole.subarray(8 + headerBytes)) });
    }
  }

  /** The bytes pushed that no whole frame holds yet. */
  get buffered(): number {
    return this.#buffered;
  }

  #peek(bytes: number): Buffer {
    if (this.#chunks[0].length < bytes) this.#chunks = [Buffer.concat(this.#chunks)];
    return this.#chunks[0];
  }

  #take(bytes: number): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks);
    const rest = all.subarray(bytes);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
    return all.subarray(0, bytes);
  }
}

/** The length of packMessage(header, payload) for a payload of `payloadBytes`. */
export function packedBytes(header: Record<string, unknown>, payloadBytes: number): number {
  return 8 + Buffer.byteLength(JSON.stringify(header), "utf8") + payloadBytes;
}

/** One header and payload as a single byte array (the frame layout), for values kept in the store. */
export function packMessage(header: Record<string, unknown>, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return new Uint8Array(Buffer.concat(encodeFrame(header, payload)));
}

/**
 * The header and payload of packMessage's bytes; the payload is copied, so it is aligned for any typed array. Bytes that
 * are not one such message throw a StoreProtocolError.
 */
export function unpackMessage(bytes: Uint8Array): Frame {
  const reader = new FrameReader();
  const frames = reader.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  if (frames.length !== 1 || reader.buffered !== 0) {
    const found = frames.length === 0 ? "none whole" : `${frames.length}${reader.buffered !== 0 ? ` and ${reader.buffered} bytes more` : ""}`;
    throw new StoreProtocolError(`expected one message of ${bytes.byteLength} bytes, found ${found}`);
  }
  // FrameReader already copied the payload out (aligned, not sharing `bytes`): no second copy.
  return frames[0];
}
