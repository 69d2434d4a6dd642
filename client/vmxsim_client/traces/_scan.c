/* The ftrace reader's bulk path in C: the compiled twin of scan.py's ``scan_chunk``, whose
 * docstring gives the rules; this file follows them branch for branch, and
 * tests/test_traces_native.py checks that both give the same columns, counts and stopping
 * point on every fixture and on generated lines.
 *
 * scan(chunk, pos, limit, memo, payloads, remember, dotted, raw, perf, raw_clock_hz, records,
 *      stamps, who) -> (pos, lines, exits, entries)
 *
 * Built by hatch_build.py when a C compiler is there; without it the Python twin runs (same
 * results, slower).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *str_current, *str_identity, *str_entry_vcpu, *str_frombytes;

/* --- the memo: a 2-way set-associative table of the byte strings already looked up in the
 * reader's dicts (payload -> (record, vcpu), task prefix -> thread), each slot holding its key
 * and, for a payload, the packed record and vCPU inline: a repeated string costs a hash and a
 * memcmp in one place of memory, instead of a bytes object, SipHash, a dict look-up and three
 * objects to touch. It holds references: the dicts only grow and their values never change,
 * so a remembered answer stays right. */

#define MEMO_FIRST_SETS (1 << 8)
#define MEMO_MAX_SETS (1 << 15) /* 16 MiB at most; it doubles as it fills */
#define KEY_INLINE 176
#define RECORD_BYTES 48

typedef struct {
    uint64_t hash;
    int32_t kind; /* which dict: a prefix table (0-2) or the payloads (3); -1: empty */
    int32_t len;
    PyObject *value; /* what the dict holds for it (owned) */
    long vcpu;       /* a payload's own vCPU, or -1 */
    char record[RECORD_BYTES];
    char key[KEY_INLINE];
} Slot;

typedef struct {
    Slot (*slots)[2];
    size_t sets, used;
    Slot scratch; /* the answer for a key too long to keep */
} Memo;

static Slot (*new_sets(size_t sets))[2] {
    Slot(*slots)[2] = PyMem_Calloc(sets, sizeof *slots);
    if (slots == NULL)
        return NULL;
    for (size_t k = 0; k < sets; k++)
        slots[k][0].kind = slots[k][1].kind = -1;
    return slots;
}

static void memo_free(PyObject *capsule) {
    Memo *memo = PyCapsule_GetPointer(capsule, "vmxsim._scan.memo");
    if (memo == NULL)
        return;
    for (size_t k = 0; k < memo->sets; k++) {
        Py_XDECREF(memo->slots[k][0].value);
        Py_XDECREF(memo->slots[k][1].value);
    }
    Py_XDECREF(memo->scratch.value);
    PyMem_Free(memo->slots);
    PyMem_Free(memo);
}

static PyObject *memo_new(PyObject *self, PyObject *unused) {
    Memo *memo = PyMem_Calloc(1, sizeof(Memo));
    if (memo == NULL)
        return PyErr_NoMemory();
    memo->sets = MEMO_FIRST_SETS;
    memo->slots = new_sets(memo->sets);
    PyObject *capsule = memo->slots ? PyCapsule_New(memo, "vmxsim._scan.memo", memo_free) : NULL;
    if (capsule == NULL) {
        int no_memory = memo->slots == NULL;
        PyMem_Free(memo->slots);
        PyMem_Free(memo);
        return no_memory ? PyErr_NoMemory() : NULL;
    }
    return capsule;
}

static size_t set_of(uint64_t h, size_t sets) {
    return (size_t)(h >> 7) & (sets - 1);
}

/* Double the table: each set splits in two, so every entry keeps its place (no loss). */
static void grow(Memo *memo) {
    size_t sets = memo->sets * 2;
    Slot(*slots)[2] = new_sets(sets);
    if (slots == NULL)
        return; /* keep the smaller table */
    for (size_t k = 0; k < memo->sets; k++) {
        for (int way = 0; way < 2; way++) {
            Slot *old = &memo->slots[k][way];
            if (old->kind < 0) {
                Py_XDECREF(old->value);
                continue;
            }
            Slot *set = slots[set_of(old->hash, sets)];
            set[set[0].kind < 0 ? 0 : 1] = *old; /* moves the value reference */
        }
    }
    PyMem_Free(memo->slots);
    memo->slots = slots;
    memo->sets = sets;
}

static uint64_t hash_bytes(const char *s, Py_ssize_t n, uint64_t seed) {
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, (size_t)n);
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    return h;
}

static int slot_is(const Slot *slot, uint64_t h, int kind, const char *text, Py_ssize_t len) {
    return slot->hash == h && slot->kind == kind && slot->len == len &&
           memcmp(slot->key, text, (size_t)len) == 0;
}

/* Fill a slot from a dict value: a payload's must be (48-byte record, int vcpu). 0: refused. */
static int fill(Slot *slot, PyObject *value, int kind) {
    if (kind == 3) {
        if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2)
            return 0;
        PyObject *record = PyTuple_GET_ITEM(value, 0), *vcpu = PyTuple_GET_ITEM(value, 1);
        if (!PyBytes_Check(record) || PyBytes_GET_SIZE(record) != RECORD_BYTES ||
            !PyLong_Check(vcpu))
            return 0;
        long n = PyLong_AsLong(vcpu);
        if (n == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        memcpy(slot->record, PyBytes_AS_STRING(record), RECORD_BYTES);
        slot->vcpu = n;
    }
    Py_INCREF(value);
    Py_XSETREF(slot->value, value);
    return 1;
}

/* dict[text] through the memo: its slot, or NULL (not in the dict, None, or not of the
 * expected shape: *error says whether an exception is set). */
static Slot *lookup(Memo *memo, PyObject *dict, int kind, const char *text, Py_ssize_t len,
                    int *error) {
    uint64_t h = hash_bytes(text, len, (uint64_t)kind);
    Slot *set = memo->slots[set_of(h, memo->sets)];
    if (slot_is(&set[0], h, kind, text, len))
        return &set[0];
    if (slot_is(&set[1], h, kind, text, len))
        return &set[1];
    PyObject *key = PyBytes_FromStringAndSize(text, len);
    if (key == NULL) {
        *error = 1;
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(dict, key);
    Py_DECREF(key);
    if (value == NULL || value == Py_None) {
        if (PyErr_Occurred())
            *error = 1;
        return NULL;
    }
    Slot *slot = &memo->scratch;
    if (len <= KEY_INLINE && memo->used >= memo->sets && memo->sets < MEMO_MAX_SETS) {
        grow(memo); /* half full: make room before this one goes in */
        set = memo->slots[set_of(h, memo->sets)];
    }
    if (len <= KEY_INLINE) { /* the newest in way 0, the one before it in way 1 */
        memo->used += set[1].kind < 0;
        Slot old = set[1];
        set[1] = set[0];
        set[0] = old; /* its value reference is released by fill() */
        slot = &set[0];
    }
    if (!fill(slot, value, kind)) {
        slot->kind = -1;
        return NULL;
    }
    slot->hash = h;
    slot->kind = kind;
    slot->len = (int32_t)len;
    if (slot != &memo->scratch)
        memcpy(slot->key, text, (size_t)len);
    else
        slot->kind = -1; /* never matches: the scratch answer is for this call only */
    return slot;
}

typedef struct {
    char *data;
    size_t used, cap;
} Buffer;

static int put(Buffer *b, const void *data, size_t n) {
    if (b->used + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->used + n)
            cap *= 2;
        char *grown = PyMem_Realloc(b->data, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->used, data, n);
    b->used += n;
    return 0;
}

/* Append a buffer to a bytearray. */
static int flush(Buffer *b, PyObject *out) {
    if (b->used == 0)
        return 0;
    Py_ssize_t size = PyByteArray_GET_SIZE(out);
    if (PyByteArray_Resize(out, size + (Py_ssize_t)b->used) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(out) + size, b->data, b->used);
    return 0;
}

/* --- one line ----------------------------------------------------------------------------- */

static int is_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* The first ``pat`` in ``s[:n]`` (lines are short and the needles rare: memchr for the first
 * byte, then memcmp, beats memmem's per-call set-up). */
static const char *find(const char *s, Py_ssize_t n, const char *pat, Py_ssize_t m) {
    const char *end = s + n - m + 1;
    while (s < end) {
        s = memchr(s, pat[0], (size_t)(end - s));
        if (s == NULL)
            return NULL;
        if (memcmp(s + 1, pat + 1, (size_t)(m - 1)) == 0)
            return s;
        s++;
    }
    return NULL;
}

typedef struct {
    Memo *memo;
    PyObject *tables[3]; /* dotted, raw, perf */
    PyObject *payloads;
    PyObject *remember; /* payload -> its (record, vcpu), now in payloads, or None */
} Context;

enum { DOTTED = 0, RAW = 1, PERF = 2, PAYLOAD = 3 };

/* The remembered thread of a header (bytes before the event name), as scan.py's _task;
 * borrowed, or NULL when the line must go to the Python rules. */
static PyObject *task(Context *c, const char *head, Py_ssize_t len, const char **stamp,
                      Py_ssize_t *stamp_len, int *kind, int *error) {
    while (len > 0 && is_space((unsigned char)head[len - 1]))
        len--;
    *kind = DOTTED;
    if (len >= 5 && memcmp(head + len - 5, " kvm:", 5) == 0) {
        len -= 5;
        *kind = PERF;
    }
    Py_ssize_t space = len - 1;
    while (space >= 0 && head[space] != ' ')
        space--;
    *stamp = head + space + 1;
    *stamp_len = len - space - 1;
    if (*stamp_len > 0 && (*stamp)[0] == '[') {
        if (*kind == PERF)
            return NULL; /* perf script never glues a raw clock to the CPU */
        *kind = RAW;
    }
    Slot *slot = lookup(c->memo, c->tables[*kind], *kind, head, space >= 0 ? space : 0, error);
    return slot != NULL ? slot->value : NULL;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* float(text), or -1.0 when Python's float() refuses it. Digits with one '.' and at most 15
 * significant digits: N / 10**k with both exact doubles, one correctly rounded division, which
 * is the correctly rounded value of the decimal, as float() gives; anything else: float(). */
static double parse_stamp(const char *text, Py_ssize_t len, int *error) {
    uint64_t n = 0;
    int digits = 0, fraction = -1, plain = len > 1 && len <= 40;
    for (Py_ssize_t k = 0; plain && k < len; k++) {
        char ch = text[k];
        if (ch >= '0' && ch <= '9') {
            n = n * 10 + (uint64_t)(ch - '0');
            if (n != 0)
                digits++;
            if (fraction >= 0)
                fraction++;
        } else if (ch == '.' && fraction < 0) {
            fraction = 0;
        } else {
            plain = 0;
        }
    }
    if (plain && fraction >= 0 && digits <= 15 && fraction <= 22 && len > 1)
        return (double)n / POW10[fraction];
    PyObject *token = PyBytes_FromStringAndSize(text, len);
    if (token == NULL) {
        *error = 1;
        return -1.0;
    }
    PyObject *value = PyFloat_FromString(token);
    Py_DECREF(token);
    if (value == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return -1.0;
        }
        *error = 1;
        return -1.0;
    }
    double result = PyFloat_AS_DOUBLE(value);
    Py_DECREF(value);
    return result;
}

typedef struct {
    PyObject *thread; /* borrowed */
    long vcpu;
    int set;
    char who[16];
} Identity;

#define IDENTITIES 16

/* The packed (vcpu, vm) identity of an exit: thread.current, or thread.identity(vcpu), from a
 * per-call table. Nothing changes a thread's identities during one scan (a vCPU change stops
 * it). NULL when an exception is set. */
static const char *identity(Identity *table, PyObject *thread, long vcpu) {
    Identity *slot = &table[(((uintptr_t)thread >> 4) ^ (uintptr_t)vcpu) % IDENTITIES];
    if (slot->set && slot->thread == thread && slot->vcpu == vcpu)
        return slot->who;
    PyObject *who;
    if (vcpu < 0) {
        who = PyObject_GetAttr(thread, str_current);
    } else {
        PyObject *number = PyLong_FromLong(vcpu);
        who = number ? PyObject_CallMethodOneArg(thread, str_identity, number) : NULL;
        Py_XDECREF(number);
    }
    if (who == NULL)
        return NULL;
    if (!PyBytes_Check(who) || PyBytes_GET_SIZE(who) != 16) {
        Py_DECREF(who);
        PyErr_SetString(PyExc_TypeError, "a thread identity is 16 packed bytes");
        return NULL;
    }
    memcpy(slot->who, PyBytes_AS_STRING(who), 16);
    Py_DECREF(who);
    slot->thread = thread;
    slot->vcpu = vcpu;
    slot->set = 1;
    return slot->who;
}

typedef struct {
    Buffer records, stamps, who;
} Output;

enum { STOP = 0, EXIT = 1, ENTRY = 2, OTHER = 3, FAILED = -1 };

/* What the bulk path does with one line: STOP (the Python rules read it), EXIT (appended),
 * ENTRY or OTHER (passed over), FAILED (an exception is set). */
static int one_line(Context *c, const char *line, Py_ssize_t len, double hz, Identity *ids,
                    Output *out) {
    const char *e = find(line, len, "kvm_e", 5);
    if (e == NULL) { /* another event: unless it may be half of a wrapped record */
        Py_ssize_t tail = len;
        while (tail > 0 && is_space((unsigned char)line[tail - 1]))
            tail--;
        if (tail == 0)
            return OTHER;
        unsigned char last = (unsigned char)line[tail - 1];
        if (last == ':' || (last >= 0x1C && last < 0x20) || last >= 0x80 ||
            find(line, len, "kvm_nested_vmexit", 17) != NULL)
            return STOP;
        return OTHER;
    }
    Py_ssize_t from = e - line;
    const char *stamp;
    Py_ssize_t stamp_len;
    int kind, error = 0;
    const char *exit = find(e, len - from, "kvm_exit:", 9);
    if (exit != NULL) {
        Py_ssize_t at = exit - line;
        const char *payload = exit + 9;
        Py_ssize_t payload_len = len - at - 9;
        Slot *known = lookup(c->memo, c->payloads, PAYLOAD, payload, payload_len, &error);
        if (error)
            return FAILED;
        long own_vcpu = known != NULL ? known->vcpu : 0;
        char record[RECORD_BYTES];
        if (known != NULL)
            memcpy(record, known->record, RECORD_BYTES); /* the slot may move: keep a copy */
        PyObject *thread = task(c, line, at, &stamp, &stamp_len, &kind, &error);
        if (thread == NULL)
            return error ? FAILED : STOP;
        if (known == NULL) { /* a new payload of a known thread: remember(payload) parses it */
            PyObject *text = PyBytes_FromStringAndSize(payload, payload_len);
            PyObject *made = text ? PyObject_CallOneArg(c->remember, text) : NULL;
            Py_XDECREF(text);
            if (made == NULL)
                return FAILED;
            int taken = made != Py_None;
            Py_DECREF(made);
            if (!taken)
                return STOP;
            known = lookup(c->memo, c->payloads, PAYLOAD, payload, payload_len, &error);
            if (known == NULL)
                return error ? FAILED : STOP;
            own_vcpu = known->vcpu;
            memcpy(record, known->record, RECORD_BYTES);
        }
        if (stamp_len < 1 || stamp[stamp_len - 1] != ':')
            return STOP;
        double t;
        if (kind == RAW) {
            const char *close = memchr(stamp, ']', (size_t)stamp_len);
            if (close == NULL)
                return STOP;
            const char *digits = close + 1, *end = stamp + stamp_len - 1;
            if (digits >= end || end - digits > 19)
                return STOP; /* none, or more than 64 bits may hold: the Python rules */
            uint64_t v = 0;
            for (const char *d = digits; d < end; d++) {
                if (*d < '0' || *d > '9')
                    return STOP;
                v = v * 10 + (uint64_t)(*d - '0');
            }
            t = (double)v / hz; /* rounded to nearest as Python's int / float rounds */
        } else {
            if (memchr(stamp, '.', (size_t)stamp_len) == NULL)
                return STOP;
            t = parse_stamp(stamp, stamp_len - 1, &error);
            if (error)
                return FAILED;
        }
        if (!(t >= 0.0 && t < Py_HUGE_VAL))
            return STOP;
        const char *who = identity(ids, thread, own_vcpu);
        if (who == NULL || put(&out->records, record, RECORD_BYTES) < 0 ||
            put(&out->stamps, &t, sizeof t) < 0 || put(&out->who, who, 16) < 0)
            return FAILED;
        return EXIT;
    }
    const char *entry = find(e, len - from, "kvm_entry:", 10);
    if (entry == NULL || find(e, len - from, "kvm_exit", 8) != NULL)
        return STOP;
    PyObject *thread = task(c, line, entry - line, &stamp, &stamp_len, &kind, &error);
    if (thread == NULL)
        return error ? FAILED : STOP;
    if (stamp_len < 1 || stamp[stamp_len - 1] != ':')
        return STOP;
    /* payload.split(None, 2): 'vcpu', then the number (trailing commas stripped) */
    const char *p = entry + 10, *end = line + len;
    while (p < end && is_space((unsigned char)*p))
        p++;
    const char *word = p;
    while (p < end && !is_space((unsigned char)*p))
        p++;
    if (p - word != 4 || memcmp(word, "vcpu", 4) != 0)
        return STOP;
    while (p < end && is_space((unsigned char)*p))
        p++;
    const char *number = p;
    while (p < end && !is_space((unsigned char)*p))
        p++;
    while (p > number && p[-1] == ',')
        p--;
    if (p == number || p - number > 18)
        return STOP;
    long long v = 0;
    for (const char *d = number; d < p; d++) {
        if (*d < '0' || *d > '9')
            return STOP;
        v = v * 10 + (*d - '0');
    }
    PyObject *current = PyObject_GetAttr(thread, str_entry_vcpu);
    if (current == NULL)
        return FAILED;
    int same = PyLong_CheckExact(current) && PyLong_AsLongLong(current) == v;
    Py_DECREF(current);
    if (PyErr_Occurred())
        return FAILED;
    return same ? ENTRY : STOP; /* a vCPU change: the Python rules record it */
}

static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *data, *capsule, *payloads, *remember, *dotted, *raw, *perf, *records, *stamps, *who;
    Py_ssize_t pos, limit;
    double hz;
    if (!PyArg_ParseTuple(args, "SnnOO!OO!O!O!dO!OO!", &data, &pos, &limit, &capsule,
                          &PyDict_Type, &payloads, &remember, &PyDict_Type, &dotted,
                          &PyDict_Type, &raw, &PyDict_Type, &perf, &hz, &PyByteArray_Type,
                          &records, &stamps, &PyByteArray_Type, &who))
        return NULL;
    Memo *memo = PyCapsule_GetPointer(capsule, "vmxsim._scan.memo");
    if (memo == NULL)
        return NULL;
    Context c = {memo, {dotted, raw, perf}, payloads, remember};
    const char *text = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data), lines = 0, exits = 0, entries = 0;
    Identity ids[IDENTITIES];
    memset(ids, 0, sizeof ids);
    Output out = {{NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}};
    int failed = 0;
    if (pos < 0)
        pos = 0;
    while (pos <= size) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', (size_t)(size - pos));
        Py_ssize_t len = nl != NULL ? nl - start : size - pos;
        if (len > limit)
            break; /* over-long: the reader reads it as such */
        int what = one_line(&c, start, len, hz, ids, &out);
        if (what == FAILED) {
            failed = 1;
            break;
        }
        if (what == STOP)
            break;
        exits += what == EXIT;
        entries += what == ENTRY;
        lines++;
        pos += len + 1;
    }
    if (!failed && out.stamps.used > 0) {
        PyObject *chunk = PyBytes_FromStringAndSize(out.stamps.data, (Py_ssize_t)out.stamps.used);
        PyObject *done = chunk ? PyObject_CallMethodOneArg(stamps, str_frombytes, chunk) : NULL;
        Py_XDECREF(chunk);
        if (done == NULL || flush(&out.records, records) < 0 || flush(&out.who, who) < 0)
            failed = 1;
        Py_XDECREF(done);
    }
    PyMem_Free(out.records.data);
    PyMem_Free(out.stamps.data);
    PyMem_Free(out.who.data);
    if (failed)
        return NULL;
    return Py_BuildValue("nnnn", pos, lines, exits, entries);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Read a chunk's lines from pos in bulk; see scan.scan_chunk."},
    {"memo", memo_new, METH_NOARGS, "A new memo of looked-up payloads and task prefixes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "The ftrace bulk path in C (see scan.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__scan(void) {
    str_current = PyUnicode_InternFromString("current");
    str_identity = PyUnicode_InternFromString("identity");
    str_entry_vcpu = PyUnicode_InternFromString("entry_vcpu");
    str_frombytes = PyUnicode_InternFromString("frombytes");
    if (!str_current || !str_identity || !str_entry_vcpu || !str_frombytes)
        return NULL;
    return PyModule_Create(&module);
}
