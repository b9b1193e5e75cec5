/**
 * A restricted unpickler for the `data.pkl` of a torch.save checkpoint.
 *
 * Python's pickle is a small stack machine that can import and call anything; a state
 * dict needs only a handful of globals (OrderedDict, the tensor/parameter rebuild
 * functions and the storage classes). This interpreter knows exactly those and builds
 * plain data objects for them. Every other GLOBAL is refused at the moment it is read,
 * before anything could call it, and unknown opcodes are refused by name. Nothing here
 * evaluates or executes anything from the file.
 */
import type { DType } from '../tensor.js';
import { WeightFileError } from './types.js';

export type PickleKey = string | number | bigint | boolean | null;

export type PickleValue =
  | null | boolean | number | bigint | string | Uint8Array
  | PyTuple | PyList | PyDict | PyGlobal | StorageRef | TensorRef;

export class PyTuple {
  constructor(readonly items: readonly PickleValue[]) {}
}

export class PyList {
  readonly items: PickleValue[] = [];
}

/** dict and collections.OrderedDict (both keep insertion order). */
export class PyDict {
  readonly map = new Map<PickleKey, PickleValue>();
}

/** A reference to one of the allowed globals. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualified(): string { return `${this.module}.${this.name}`; }
}

/** A storage as named by a persistent id: ('storage', StorageClass, key, location, numel). */
export class StorageRef {
  constructor(
    readonly dtype: DType,
    /** Record name: the bytes are in `<archive>/data/<key>`. */
    readonly key: string,
    readonly location: string,
    /** Number of elements in the storage. */
    readonly numel: number,
  ) {}
}

/** What torch._utils._rebuild_tensor_v2 would build: a strided view of a storage. */
export class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
  ) {}
}

/** Storage classes a torch.save persistent id may name, by their dtype. */
export const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16', DoubleStorage: 'F64',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8',
  ByteStorage: 'U8', BoolStorage: 'BOOL',
};

/**
 * The only globals a state dict pickle may reference. (torch 1.13 names dtypes through
 * the storage classes in persistent ids; `torch.float32`-style globals do not appear in
 * state dicts, so they are not allowed.)
 */
const ALLOWED_GLOBALS = new Set<string>([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_DTYPES).map((n) => `torch.${n}`),
]);

/** Names of all standard pickle opcodes, so an unsupported one is reported by name. */
const OPCODE_NAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT',
  0x49: 'INT', 0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE',
  0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD',
  0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET',
  0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST',
  0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT', 0x73: 'SETITEM',
  0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT', 0x80: 'PROTO',
  0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4',
  0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

export interface UnpickleOptions {
  /** Name of the file being loaded, used in every error message. */
  readonly source: string;
}

/** Run the restricted unpickler over `data` and return the top-level object. */
export function unpickle(data: Uint8Array, options: UnpickleOptions): PickleValue {
  return new Unpickler(data, options.source).run();
}

function isKey(v: PickleValue): v is PickleKey {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean';
}

function describe(v: PickleValue): string {
  if (v === null) return 'None';
  if (typeof v !== 'object') return typeof v;
  if (v instanceof Uint8Array) return 'bytes';
  return v.constructor.name;
}

class Unpickler {
  private pos = 0;
  private stack: PickleValue[] = [];
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, PickleValue>();
  private readonly view: DataView;
  private readonly utf8 = new TextDecoder('utf-8');

  constructor(private readonly data: Uint8Array, private readonly source: string) {
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  private fail(message: string): never {
    throw new WeightFileError(`${this.source}: data.pkl: ${message}`);
  }

  private need(n: number): number {
    if (n < 0 || this.pos + n > this.data.length) this.fail(`pickle is truncated at byte ${this.pos}`);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private u8(): number { return this.data[this.need(1)]; }
  private u16(): number { return this.view.getUint16(this.need(2), true); }
  private u32(): number { return this.view.getUint32(this.need(4), true); }
  private u64(): number {
    const v = this.view.getBigUint64(this.need(8), true);
    if (v > BigInt(this.data.length)) this.fail(`length ${v} runs past the end of the pickle`);
    return Number(v);
  }
  private bytes(n: number): Uint8Array { const at = this.need(n); return this.data.slice(at, at + n); }
  private text(n: number): string { const at = this.need(n); return this.utf8.decode(this.data.subarray(at, at + n)); }

  private line(): string {
    const end = this.data.indexOf(0x0a, this.pos);
    if (end < 0) this.fail('pickle is truncated inside a GLOBAL');
    const s = this.utf8.decode(this.data.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }

  /** Items below the innermost MARK are out of reach until that MARK is consumed. */
  private checkDepth(): void {
    const floor = this.marks.length > 0 ? this.marks[this.marks.length - 1] : 0;
    if (this.stack.length <= floor) this.fail(`stack underflow at byte ${this.pos - 1}`);
  }

  private pop(): PickleValue {
    this.checkDepth();
    return this.stack.pop() as PickleValue;
  }

  private top(): PickleValue {
    this.checkDepth();
    return this.stack[this.stack.length - 1];
  }

  private popMark(): PickleValue[] {
    const m = this.marks.pop();
    if (m === undefined) this.fail(`no MARK before byte ${this.pos - 1}`);
    const items = this.stack.slice(m);
    this.stack.length = m;
    return items;
  }

  /** Little-endian two's-complement integer (LONG1/LONG4). */
  private long(n: number): number | bigint {
    const b = this.bytes(n);
    if (n === 0) return 0;
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  private global(module: string, name: string): PyGlobal {
    const q = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(q)) {
      throw new WeightFileError(`refusing to load ${this.source}: pickle references ${q}, which a state dict never needs`);
    }
    return new PyGlobal(module, name);
  }

  private setItems(target: PickleValue, items: PickleValue[]): void {
    if (!(target instanceof PyDict)) this.fail(`SETITEM on a ${describe(target)}, not a dict`);
    if (items.length % 2 !== 0) this.fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i];
      if (!isKey(k)) this.fail(`unsupported dict key of type ${describe(k)}`);
      target.map.set(k, items[i + 1]);
    }
  }

  private append(target: PickleValue, items: PickleValue[]): void {
    if (!(target instanceof PyList)) this.fail(`APPEND on a ${describe(target)}, not a list`);
    target.items.push(...items);
  }

  /** REDUCE / NEWOBJ: "call" an allowed global by building the data it stands for. */
  private call(fn: PickleValue, argsValue: PickleValue): PickleValue {
    if (!(fn instanceof PyGlobal)) this.fail(`REDUCE on a ${describe(fn)}, which is not callable`);
    if (!(argsValue instanceof PyTuple)) this.fail(`REDUCE of ${fn.qualified} with non-tuple arguments`);
    const args = argsValue.items;
    switch (fn.qualified) {
      case 'collections.OrderedDict': {
        const d = new PyDict();
        if (args.length === 0) return d;
        const pairs = args[0];
        if (args.length === 1 && pairs instanceof PyList) {
          for (const p of pairs.items) {
            if (!(p instanceof PyTuple) || p.items.length !== 2) this.fail('OrderedDict built from a list that is not of pairs');
            this.setItems(d, [...p.items]);
          }
          return d;
        }
        return this.fail('OrderedDict built with unsupported arguments');
      }
      case 'torch._utils._rebuild_tensor_v2': {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (args.length < 6 || args.length > 7) this.fail(`_rebuild_tensor_v2 with ${args.length} arguments`);
        const [storage, offset, size, stride] = args;
        if (!(storage instanceof StorageRef)) this.fail('_rebuild_tensor_v2 without a storage');
        const shape = this.intTuple(size, 'size');
        const strides = this.intTuple(stride, 'stride');
        if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) this.fail('bad tensor storage offset');
        if (shape.length !== strides.length) this.fail('tensor size and stride differ in length');
        return new TensorRef(storage, offset, shape, strides);
      }
      case 'torch._utils._rebuild_parameter': {
        // (data, requires_grad, backward_hooks): the parameter is just its tensor here.
        if (args.length !== 3 || !(args[0] instanceof TensorRef)) this.fail('_rebuild_parameter without a tensor');
        return args[0];
      }
      default:
        return this.fail(`pickle calls ${fn.qualified}, which a state dict never does`);
    }
  }

  private intTuple(v: PickleValue, what: string): number[] {
    if (!(v instanceof PyTuple)) this.fail(`tensor ${what} is a ${describe(v)}, not a tuple`);
    return v.items.map((x) => {
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) this.fail(`tensor ${what} holds ${String(x)}`);
      return x;
    });
  }

  private persistentLoad(pid: PickleValue): StorageRef {
    if (!(pid instanceof PyTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage') {
      this.fail("persistent id is not ('storage', StorageClass, key, location, numel)");
    }
    const [, cls, key, location, numel] = pid.items;
    if (!(cls instanceof PyGlobal) || cls.module !== 'torch' || !(cls.name in STORAGE_DTYPES)) {
      this.fail(`persistent id names ${describe(cls)} instead of a storage class`);
    }
    if (typeof key !== 'string' || typeof location !== 'string') this.fail('persistent id key/location are not strings');
    if (typeof numel !== 'number' || !Number.isInteger(numel) || numel < 0) this.fail('persistent id has a bad element count');
    return new StorageRef(STORAGE_DTYPES[cls.name], key, location, numel);
  }

  run(): PickleValue {
    for (;;) {
      const at = this.pos;
      const op = this.u8();
      switch (op) {
        case 0x80: { // PROTO
          const proto = this.u8();
          if (proto < 2 || proto > 5) this.fail(`unsupported pickle protocol ${proto}`);
          break;
        }
        case 0x95: this.u64(); break; // FRAME: framing is only a read-ahead hint
        case 0x2e: { // STOP
          const result = this.pop();
          return result;
        }
        case 0x28: this.marks.push(this.stack.length); break; // MARK
        case 0x7d: this.stack.push(new PyDict()); break; // EMPTY_DICT
        case 0x5d: this.stack.push(new PyList()); break; // EMPTY_LIST
        case 0x29: this.stack.push(new PyTuple([])); break; // EMPTY_TUPLE
        case 0x74: this.stack.push(new PyTuple(this.popMark())); break; // TUPLE
        case 0x85: { const a = this.pop(); this.stack.push(new PyTuple([a])); break; } // TUPLE1
        case 0x86: { const b = this.pop(); const a = this.pop(); this.stack.push(new PyTuple([a, b])); break; }
        case 0x87: { const c = this.pop(); const b = this.pop(); const a = this.pop(); this.stack.push(new PyTuple([a, b, c])); break; }
        case 0x71: this.memo.set(this.u8(), this.top()); break; // BINPUT
        case 0x72: this.memo.set(this.u32(), this.top()); break; // LONG_BINPUT
        case 0x94: this.memo.set(this.memo.size, this.top()); break; // MEMOIZE
        case 0x68: case 0x6a: { // BINGET, LONG_BINGET
          const i = op === 0x68 ? this.u8() : this.u32();
          if (!this.memo.has(i)) this.fail(`memo entry ${i} is not set`);
          this.stack.push(this.memo.get(i) as PickleValue);
          break;
        }
        case 0x4a: this.stack.push(this.view.getInt32(this.need(4), true)); break; // BININT
        case 0x4b: this.stack.push(this.u8()); break; // BININT1
        case 0x4d: this.stack.push(this.u16()); break; // BININT2
        case 0x8a: this.stack.push(this.long(this.u8())); break; // LONG1
        case 0x8b: { // LONG4
          const n = this.view.getInt32(this.need(4), true);
          if (n < 0 || n > 64) this.fail(`LONG4 of ${n} bytes`);
          this.stack.push(this.long(n));
          break;
        }
        case 0x47: this.stack.push(this.view.getFloat64(this.need(8), false)); break; // BINFLOAT (big-endian)
        case 0x58: this.stack.push(this.text(this.u32())); break; // BINUNICODE
        case 0x8c: this.stack.push(this.text(this.u8())); break; // SHORT_BINUNICODE
        case 0x8d: this.stack.push(this.text(this.u64())); break; // BINUNICODE8
        case 0x42: this.stack.push(this.bytes(this.u32())); break; // BINBYTES
        case 0x43: this.stack.push(this.bytes(this.u8())); break; // SHORT_BINBYTES
        case 0x8e: this.stack.push(this.bytes(this.u64())); break; // BINBYTES8
        case 0x88: this.stack.push(true); break; // NEWTRUE
        case 0x89: this.stack.push(false); break; // NEWFALSE
        case 0x4e: this.stack.push(null); break; // NONE
        case 0x30: this.pop(); break; // POP
        case 0x63: { // GLOBAL "module\nname\n"
          const module = this.line();
          const name = this.line();
          this.stack.push(this.global(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') this.fail('STACK_GLOBAL with non-string names');
          this.stack.push(this.global(module, name));
          break;
        }
        case 0x52: { // REDUCE
          const args = this.pop();
          const fn = this.pop();
          this.stack.push(this.call(fn, args));
          break;
        }
        case 0x81: { // NEWOBJ: cls.__new__(cls, *args); OrderedDict is the only class allowed
          this.pop();
          const cls = this.pop();
          if (!(cls instanceof PyGlobal) || cls.qualified !== 'collections.OrderedDict') {
            this.fail(`NEWOBJ of ${cls instanceof PyGlobal ? cls.qualified : describe(cls)}`);
          }
          this.stack.push(new PyDict());
          break;
        }
        case 0x62: { // BUILD: set state on the object below
          this.pop(); // the state itself is ignored
          const obj = this.top();
          // A module's state_dict() is an OrderedDict whose `_metadata` attribute arrives
          // via BUILD; tensors may get state too. Neither matters for the weights.
          if (!(obj instanceof PyDict) && !(obj instanceof TensorRef)) this.fail(`BUILD on a ${describe(obj)}`);
          break;
        }
        case 0x73: { // SETITEM
          const v = this.pop();
          const k = this.pop();
          this.setItems(this.top(), [k, v]);
          break;
        }
        case 0x75: { const items = this.popMark(); this.setItems(this.top(), items); break; } // SETITEMS
        case 0x61: { const v = this.pop(); this.append(this.top(), [v]); break; } // APPEND
        case 0x65: { const items = this.popMark(); this.append(this.top(), items); break; } // APPENDS
        case 0x51: this.stack.push(this.persistentLoad(this.pop())); break; // BINPERSID
        default: {
          const name = OPCODE_NAMES[op] ?? 'unknown';
          this.fail(`unsupported pickle opcode ${name} (0x${op.toString(16).padStart(2, '0')}) at byte ${at}`);
        }
      }
    }
  }
}
