/* The ftrace reader's bulk path in C: the compiled twin of scan.py's ``scan_chunk``, whose
 * docstring gives the rules; this file follows them branch for branch, and
 * tests/test_traces_native.py checks that both give the same columns, counts and stopping
 * point on every fixture and on generated lines.
 *
 * scan(chunk, pos, end, limit, memo, payloads, remember, reasons, dotted, raw, perf,
 *      raw_clock_hz, records, stamps, who) -> (pos, lines, exits, entries)    (chunk[:end])
 *
 * Two things the twin does in Python are done here without Python: a new payload is parsed in C
 * (parse_payload: the rules of ftrace_lines.exit_fields and FtraceReader._remember, on payloads
 * of printable ASCII; anything else goes to ``remember`` as before), and the interpreter lock is
 * released while the lines are ones the memo answers (the usual case once a trace's threads,
 * reason spellings and vCPUs have been seen), so the reader's scanning runs beside the other
 * threads of the process (the embedded server, gRPC). Whatever needs Python (a dict, a callback,
 * a new thread identity, float()) takes the lock back first.
 *
 * Built by hatch_build.py when a C compiler is there; without it the Python twin runs (same
 * results, slower).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *str_current, *str_identity, *str_entry_vcpu, *str_frombytes;

/* --- the interpreter lock: released over runs of lines C answers alone ----------------------- */

typedef struct {
    PyThreadState *saved; /* non-NULL while released */
    int calm;             /* lines since Python was last needed */
} Gil;

#define CALM_LINES 32 /* release only after this many lines without Python */

static void gil_hold(Gil *g) {
    if (g->saved != NULL) {
        PyEval_RestoreThread(g->saved);
        g->saved = NULL;
    }
    g->calm = 0;
}

static void gil_line(Gil *g) {
    if (g->saved == NULL && ++g->calm >= CALM_LINES)
        g->saved = PyEval_SaveThread();
}

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
    PyObject **graves; /* references to drop once the lock is held again (evicted values) */
    size_t dead, room;
} Memo;

/* Drop a reference now if the lock is held, else later (settle). 0, or -1 without memory. */
static int bury(Memo *memo, PyObject *value, const Gil *g) {
    if (value == NULL)
        return 0;
    if (g == NULL || g->saved == NULL) {
        Py_DECREF(value);
        return 0;
    }
    if (memo->dead == memo->room) {
        size_t room = memo->room ? memo->room * 2 : 64;
        PyObject **graves = PyMem_RawRealloc(memo->graves, room * sizeof *graves);
        if (graves == NULL)
            return -1;
        memo->graves = graves;
        memo->room = room;
    }
    memo->graves[memo->dead++] = value;
    return 0;
}

static void settle(Memo *memo) { /* with the lock */
    for (size_t k = 0; k < memo->dead; k++)
        Py_DECREF(memo->graves[k]);
    memo->dead = 0;
}

static Slot (*new_sets(size_t sets))[2] {
    Slot(*slots)[2] = PyMem_RawCalloc(sets, sizeof *slots);
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
    settle(memo);
    PyMem_RawFree(memo->graves);
    PyMem_RawFree(memo->slots);
    PyMem_RawFree(memo);
}

static PyObject *memo_new(PyObject *self, PyObject *unused) {
    Memo *memo = PyMem_RawCalloc(1, sizeof(Memo));
    if (memo == NULL)
        return PyErr_NoMemory();
    memo->sets = MEMO_FIRST_SETS;
    memo->slots = new_sets(memo->sets);
    PyObject *capsule = memo->slots ? PyCapsule_New(memo, "vmxsim._scan.memo", memo_free) : NULL;
    if (capsule == NULL) {
        int no_memory = memo->slots == NULL;
        PyMem_RawFree(memo->slots);
        PyMem_RawFree(memo);
        return no_memory ? PyErr_NoMemory() : NULL;
    }
    return capsule;
}

static size_t set_of(uint64_t h, size_t sets) {
    return (size_t)(h >> 7) & (sets - 1);
}

/* Double the table: each set splits in two, so every entry keeps its place (no loss). */
static void grow(Memo *memo, const Gil *g) {
    size_t sets = memo->sets * 2;
    Slot(*slots)[2] = new_sets(sets);
    if (slots == NULL)
        return; /* keep the smaller table */
    for (size_t k = 0; k < memo->sets; k++) {
        for (int way = 0; way < 2; way++) {
            Slot *old = &memo->slots[k][way];
            if (old->kind < 0) {
                if (bury(memo, old->value, g) < 0)
                    old->value = NULL; /* no memory for a grave: that reference leaks */
                continue;
            }
            Slot *set = slots[set_of(old->hash, sets)];
            set[set[0].kind < 0 ? 0 : 1] = *old; /* moves the value reference */
        }
    }
    PyMem_RawFree(memo->slots);
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

/* What a memo key is: a task prefix before a timestamp of one of three kinds, a kvm_exit
 * payload, or a reason spelling. */
enum { DOTTED = 0, RAW = 1, PERF = 2, PAYLOAD = 3, REASON = 4 };

/* The memo's slot of a key, or NULL (lock-free). */
static Slot *memo_find(Memo *memo, int kind, const char *text, Py_ssize_t len, uint64_t h) {
    Slot *set = memo->slots[set_of(h, memo->sets)];
    if (slot_is(&set[0], h, kind, text, len))
        return &set[0];
    if (slot_is(&set[1], h, kind, text, len))
        return &set[1];
    return NULL;
}

/* A slot for a new key (the newest in way 0 of its set, the one before it in way 1; the one
 * that falls out has its value buried), or the scratch slot for a key too long to keep; its
 * value is NULL. NULL without memory (no exception set: the lock may be released). */
static Slot *memo_insert(Memo *memo, int kind, const char *text, Py_ssize_t len, uint64_t h,
                         const Gil *g) {
    Slot *slot = &memo->scratch;
    if (len <= KEY_INLINE) {
        if (memo->used >= memo->sets && memo->sets < MEMO_MAX_SETS)
            grow(memo, g); /* half full: make room before this one goes in */
        Slot *set = memo->slots[set_of(h, memo->sets)];
        if (bury(memo, set[1].value, g) < 0)
            return NULL;
        memo->used += set[1].kind < 0;
        set[1] = set[0];
        slot = &set[0];
        memcpy(slot->key, text, (size_t)len);
    } else if (bury(memo, slot->value, g) < 0) {
        return NULL;
    }
    slot->value = NULL;
    slot->vcpu = -1;
    slot->hash = h;
    slot->len = (int32_t)len;
    slot->kind = slot == &memo->scratch ? -1 : kind; /* the scratch answer is for this call */
    return slot;
}

/* Fill a slot from a dict value (with the lock): a payload's must be (48-byte record, int
 * vcpu), a reason spelling's a non-negative int. 0: refused. */
static int fill(Slot *slot, PyObject *value, int kind) {
    if (kind == PAYLOAD) {
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
    } else if (kind == REASON) {
        if (!PyLong_CheckExact(value))
            return 0;
        long n = PyLong_AsLong(value);
        if (n < 0) {
            PyErr_Clear();
            return 0;
        }
        slot->vcpu = n;
    }
    Py_INCREF(value);
    slot->value = value;
    return 1;
}

/* dict[key] through the memo: its slot, or NULL (not in the dict, None, or not of the expected
 * shape: *error says whether an exception is set). The dict is read with the lock; a reason
 * spelling (REASON) is a str key, the others bytes. */
static Slot *lookup(Memo *memo, Gil *g, PyObject *dict, int kind, const char *text,
                    Py_ssize_t len, int *error) {
    uint64_t h = hash_bytes(text, len, (uint64_t)kind);
    Slot *slot = memo_find(memo, kind, text, len, h);
    if (slot != NULL)
        return slot;
    gil_hold(g);
    PyObject *key = kind == REASON ? PyUnicode_DecodeASCII(text, len, NULL)
                              : PyBytes_FromStringAndSize(text, len);
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
    slot = memo_insert(memo, kind, text, len, h, g);
    if (slot == NULL) {
        PyErr_NoMemory();
        *error = 1;
        return NULL;
    }
    if (!fill(slot, value, kind)) {
        slot->kind = -1;
        return NULL;
    }
    return slot;
}

typedef struct {
    char *data;
    size_t used, cap;
} Buffer;

/* Append to a buffer (lock-free); -1 without memory (no exception set). */
static int put(Buffer *b, const void *data, size_t n) {
    if (b->used + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->used + n)
            cap *= 2;
        char *grown = PyMem_RawRealloc(b->data, cap);
        if (grown == NULL)
            return -1;
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

/* A thread's vCPU from its kvm_entry lines, read once per call (nothing changes it during a
 * call: a vCPU change stops the scan). */
typedef struct {
    PyObject *thread; /* borrowed */
    long long vcpu;   /* -1: not an int (the line goes to the Python rules) */
    int set;
} EntryVcpu;

typedef struct {
    PyObject *thread; /* borrowed */
    long vcpu;
    int set;
    char who[16];
} Identity;

#define IDENTITIES 16

typedef struct {
    Memo *memo;
    Gil gil;
    PyObject *tables[3]; /* dotted, raw, perf */
    PyObject *payloads;
    PyObject *remember; /* payload -> its (record, vcpu), now in payloads, or None */
    PyObject *reasons;  /* spelling -> reason number (the reader's, for spellings seen) */
    Identity ids[IDENTITIES];
    EntryVcpu entries[IDENTITIES];
} Context;


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
    Slot *slot = lookup(c->memo, &c->gil, c->tables[*kind], *kind, head, space >= 0 ? space : 0,
                        error);
    return slot != NULL ? slot->value : NULL;
}

/* --- a new payload, parsed here: ftrace_lines.exit_fields + FtraceReader._remember ---------- */

#define MAX_TOKENS 48

typedef struct {
    const char *at;
    Py_ssize_t len;
} Token;

static int token_is(const Token *t, const char *word) {
    size_t n = strlen(word);
    return (size_t)t->len == n && memcmp(t->at, word, n) == 0;
}

/* parse_u64(text, 16) of an ASCII token: an optional 0x/0X, then hex digits, below 2**64. */
static int hex_token(const Token *t, uint64_t *out) {
    const char *p = t->at, *end = t->at + t->len;
    if (end - p >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        p += 2;
    if (p == end)
        return 0;
    uint64_t v = 0;
    int significant = 0;
    for (; p < end; p++) {
        unsigned char ch = (unsigned char)*p;
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            return 0;
        if (significant || d) {
            if (++significant > 16)
                return 0;
        }
        v = v << 4 | d;
    }
    *out = v;
    return 1;
}

/* The fields of a payload of printable ASCII and blanks: 1 with the record's values (reason
 * still a spelling), 0 when exit_fields would refuse it or the text is not such (the Python
 * parser decides). */
static int payload_fields(const char *text, Py_ssize_t len, Token *name, uint64_t out[5],
                          long *vcpu) {
    Token p[MAX_TOKENS];
    int n = 0;
    const char *s = text, *end = text + len;
    while (s < end) {
        unsigned char ch = (unsigned char)*s;
        if (is_space(ch)) {
            s++;
            continue;
        }
        const char *at = s;
        while (s < end && !is_space((unsigned char)*s)) {
            unsigned char k = (unsigned char)*s;
            if (k < 0x20 || k >= 0x7f)
                return 0; /* str.split() and int() have rules of their own beyond ASCII */
            s++;
        }
        if (n == MAX_TOKENS)
            return 0;
        p[n].at = at;
        p[n].len = s - at;
        n++;
    }
    int i = 0;
    *vcpu = -1;
    if (n > 1 && token_is(&p[0], "vcpu")) {
        Py_ssize_t k = p[1].len;
        while (k > 0 && p[1].at[k - 1] == ',')
            k--;
        if (k == 0 || k > 18)
            return 0;
        long v = 0;
        for (Py_ssize_t d = 0; d < k; d++) {
            char ch = p[1].at[d];
            if (ch < '0' || ch > '9')
                return 0;
            v = v * 10 + (ch - '0');
        }
        *vcpu = v;
        i = 2;
    }
    if (i + 1 >= n || !token_is(&p[i], "reason"))
        return 0;
    *name = p[i + 1];
    i += 2;
    while (i < n && !token_is(&p[i], "rip"))
        i++;
    if (i + 1 >= n)
        return 0;
    out[1] = out[2] = out[3] = out[4] = 0;
    if (!hex_token(&p[i + 1], &out[0]))
        return 0;
    i += 2;
    if (i + 2 < n && token_is(&p[i], "info")) {
        if (!hex_token(&p[i + 1], &out[1]) || !hex_token(&p[i + 2], &out[3]))
            return 0;
    } else if (i + 1 < n && token_is(&p[i], "info")) {
        return 0;
    }
    for (int j = i; j < n - 1; j++) {
        int index = token_is(&p[j], "info1")        ? 1
                    : token_is(&p[j], "info2")      ? 2
                    : token_is(&p[j], "intr_info")  ? 3
                    : token_is(&p[j], "error_code") ? 4
                                                    : 0;
        if (index && !hex_token(&p[j + 1], &out[index]))
            return 0;
    }
    return 1;
}

/* A payload's slot: remembered, parsed here, or parsed by ``remember`` (Python); NULL when the
 * Python rules must read the line (*error: an exception is set). */
static Slot *payload_slot(Context *c, const char *text, Py_ssize_t len, int *error) {
    uint64_t h = hash_bytes(text, len, PAYLOAD);
    Slot *slot = memo_find(c->memo, PAYLOAD, text, len, h);
    if (slot != NULL)
        return slot;
    Token name;
    uint64_t out[5];
    long vcpu;
    if (find(text, len, "kvm_e", 5) == NULL && payload_fields(text, len, &name, out, &vcpu)) {
        Slot *reason = lookup(c->memo, &c->gil, c->reasons, REASON, name.at, name.len, error);
        if (*error)
            return NULL;
        if (reason != NULL) {
            uint64_t number = (uint64_t)reason->vcpu; /* before the insert moves slots */
            slot = memo_insert(c->memo, PAYLOAD, text, len, h, &c->gil);
            if (slot == NULL) {
                gil_hold(&c->gil);
                PyErr_NoMemory();
                *error = 1;
                return NULL;
            }
            uint64_t record[6] = {number, out[0], out[1], out[2], out[3], out[4]};
            memcpy(slot->record, record, RECORD_BYTES);
            slot->vcpu = vcpu;
            return slot;
        }
    }
    /* not ours to parse: the reader's dict, else its parser */
    slot = lookup(c->memo, &c->gil, c->payloads, PAYLOAD, text, len, error);
    if (slot != NULL || *error)
        return slot;
    PyObject *bytes = PyBytes_FromStringAndSize(text, len);
    PyObject *made = bytes ? PyObject_CallOneArg(c->remember, bytes) : NULL;
    Py_XDECREF(bytes);
    if (made == NULL) {
        *error = 1;
        return NULL;
    }
    int taken = made != Py_None;
    Py_DECREF(made);
    return taken ? lookup(c->memo, &c->gil, c->payloads, PAYLOAD, text, len, error) : NULL;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* float(text), or -1.0 when Python's float() refuses it. Digits with one '.' and at most 15
 * significant digits: N / 10**k with both exact doubles, one correctly rounded division, which
 * is the correctly rounded value of the decimal, as float() gives; anything else: float(),
 * with the lock. */
static double parse_stamp(Context *c, const char *text, Py_ssize_t len, int *error) {
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
    gil_hold(&c->gil);
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

/* The packed (vcpu, vm) identity of an exit: thread.current, or thread.identity(vcpu), from a
 * per-call table. Nothing changes a thread's identities during one scan (a vCPU change stops
 * it). NULL when an exception is set. */
static const char *identity(Context *c, PyObject *thread, long vcpu) {
    Identity *slot = &c->ids[(((uintptr_t)thread >> 4) ^ (uintptr_t)vcpu) % IDENTITIES];
    if (slot->set && slot->thread == thread && slot->vcpu == vcpu)
        return slot->who;
    gil_hold(&c->gil);
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

/* thread.entry_vcpu when it is an int (else -1), from a per-call table; -2: an exception. */
static long long entry_vcpu(Context *c, PyObject *thread) {
    EntryVcpu *slot = &c->entries[((uintptr_t)thread >> 4) % IDENTITIES];
    if (slot->set && slot->thread == thread)
        return slot->vcpu;
    gil_hold(&c->gil);
    PyObject *current = PyObject_GetAttr(thread, str_entry_vcpu);
    if (current == NULL)
        return -2;
    long long v = -1;
    if (PyLong_CheckExact(current)) {
        v = PyLong_AsLongLong(current);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(current);
            return -2;
        }
        if (v < 0)
            v = -1;
    }
    Py_DECREF(current);
    slot->thread = thread;
    slot->vcpu = v;
    slot->set = 1;
    return v;
}

typedef struct {
    Buffer records, stamps, who;
} Output;

enum { STOP = 0, EXIT = 1, ENTRY = 2, OTHER = 3, FAILED = -1 };

/* What the bulk path does with one line: STOP (the Python rules read it), EXIT (appended),
 * ENTRY or OTHER (passed over), FAILED (an exception is set, the lock is held). */
static int one_line(Context *c, const char *line, Py_ssize_t len, double hz, Output *out) {
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
        PyObject *thread = task(c, line, at, &stamp, &stamp_len, &kind, &error);
        if (thread == NULL)
            return error ? FAILED : STOP;
        Slot *known = payload_slot(c, exit + 9, len - at - 9, &error);
        if (known == NULL)
            return error ? FAILED : STOP;
        long own_vcpu = known->vcpu;
        char record[RECORD_BYTES];
        memcpy(record, known->record, RECORD_BYTES); /* the slot may move: keep a copy */
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
            t = parse_stamp(c, stamp, stamp_len - 1, &error);
            if (error)
                return FAILED;
        }
        if (!(t >= 0.0 && t < Py_HUGE_VAL))
            return STOP;
        const char *who = identity(c, thread, own_vcpu);
        if (who == NULL)
            return FAILED;
        if (put(&out->records, record, RECORD_BYTES) < 0 || put(&out->stamps, &t, sizeof t) < 0 ||
            put(&out->who, who, 16) < 0) {
            gil_hold(&c->gil);
            PyErr_NoMemory();
            return FAILED;
        }
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
    long long current = entry_vcpu(c, thread);
    if (current == -2)
        return FAILED;
    return current == v ? ENTRY : STOP; /* a vCPU change: the Python rules record it */
}

static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *data, *capsule, *payloads, *remember, *reasons, *dotted, *raw, *perf, *records,
        *stamps, *who;
    Py_ssize_t pos, end, limit;
    double hz;
    if (!PyArg_ParseTuple(args, "SnnnOO!OO!O!O!O!dO!OO!", &data, &pos, &end, &limit, &capsule,
                          &PyDict_Type, &payloads, &remember, &PyDict_Type, &reasons,
                          &PyDict_Type, &dotted, &PyDict_Type, &raw, &PyDict_Type, &perf, &hz,
                          &PyByteArray_Type, &records, &stamps, &PyByteArray_Type, &who))
        return NULL;
    Memo *memo = PyCapsule_GetPointer(capsule, "vmxsim._scan.memo");
    if (memo == NULL)
        return NULL;
    Context *c = PyMem_Calloc(1, sizeof(Context));
    if (c == NULL)
        return PyErr_NoMemory();
    c->memo = memo;
    c->tables[0] = dotted;
    c->tables[1] = raw;
    c->tables[2] = perf;
    c->payloads = payloads;
    c->remember = remember;
    c->reasons = reasons;
    Py_INCREF(data); /* the text is read while the lock is released */
    const char *text = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data), lines = 0, exits = 0, entries = 0;
    if (end < size)
        size = end < 0 ? 0 : end;
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
        int what = one_line(c, start, len, hz, &out);
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
        gil_line(&c->gil);
    }
    gil_hold(&c->gil);
    settle(memo);
    if (!failed && out.stamps.used > 0) {
        PyObject *chunk = PyBytes_FromStringAndSize(out.stamps.data, (Py_ssize_t)out.stamps.used);
        PyObject *done = chunk ? PyObject_CallMethodOneArg(stamps, str_frombytes, chunk) : NULL;
        Py_XDECREF(chunk);
        if (done == NULL || flush(&out.records, records) < 0 || flush(&out.who, who) < 0)
            failed = 1;
        Py_XDECREF(done);
    }
    Py_DECREF(data);
    PyMem_Free(c);
    PyMem_RawFree(out.records.data);
    PyMem_RawFree(out.stamps.data);
    PyMem_RawFree(out.who.data);
    if (failed)
        return NULL;
    return Py_BuildValue("nnnn", pos, lines, exits, entries);
}

/* parse_payload(payload, reasons) -> (record, vcpu) or None: the C parser of new payloads
 * alone, for tests (None: the Python parser decides). */
static PyObject *parse_payload(PyObject *self, PyObject *args) {
    const char *text;
    Py_ssize_t len;
    PyObject *reasons;
    if (!PyArg_ParseTuple(args, "y#O!", &text, &len, &PyDict_Type, &reasons))
        return NULL;
    Token name;
    uint64_t out[5];
    long vcpu;
    if (find(text, len, "kvm_e", 5) != NULL || !payload_fields(text, len, &name, out, &vcpu))
        Py_RETURN_NONE;
    PyObject *key = PyUnicode_DecodeASCII(name.at, name.len, NULL);
    if (key == NULL)
        return NULL;
    PyObject *number = PyDict_GetItemWithError(reasons, key);
    Py_DECREF(key);
    if (number == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    long reason = PyLong_CheckExact(number) ? PyLong_AsLong(number) : -1;
    if (reason < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    uint64_t record[6] = {(uint64_t)reason, out[0], out[1], out[2], out[3], out[4]};
    return Py_BuildValue("(y#l)", (const char *)record, (Py_ssize_t)RECORD_BYTES, vcpu);
}

/* columns(records, who, count) -> 8 bytes objects or None: the first ``count`` packed records
 * (6 u64 each: reason, rip, qualification, info2, intr_info, error_code) and identities (vcpu,
 * vm) as columns of native u64, with None for an all-zero column other than the reason. It
 * keeps the interpreter lock: a batch takes ~0.1 ms, less than taking the lock back could cost
 * beside a busy thread (up to the 5 ms switch interval; no difference measured either way). */
#define RECORD_VALUES (RECORD_BYTES / 8)
#define COLUMNS (RECORD_VALUES + 2)

static PyObject *columns(PyObject *self, PyObject *args) {
    Py_buffer records, who;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*y*n", &records, &who, &count))
        return NULL;
    PyObject *out[COLUMNS] = {NULL};
    PyObject *result = NULL;
    if (count < 0 || records.len < count * RECORD_BYTES || who.len < count * 16) {
        PyErr_SetString(PyExc_ValueError, "columns: fewer records than count");
        goto done;
    }
    for (int k = 0; k < COLUMNS; k++) {
        out[k] = PyBytes_FromStringAndSize(NULL, count * 8);
        if (out[k] == NULL)
            goto done;
    }
    uint64_t seen[RECORD_VALUES] = {0};
    const char *row = records.buf, *id = who.buf;
    uint64_t *column[COLUMNS];
    for (int k = 0; k < COLUMNS; k++)
        column[k] = (uint64_t *)PyBytes_AS_STRING(out[k]);
    for (Py_ssize_t n = 0; n < count; n++, row += RECORD_BYTES, id += 16) {
        uint64_t v[RECORD_VALUES], pair[2];
        memcpy(v, row, RECORD_BYTES);
        memcpy(pair, id, 16);
        for (int k = 0; k < RECORD_VALUES; k++) {
            column[k][n] = v[k];
            seen[k] |= v[k];
        }
        column[RECORD_VALUES][n] = pair[0];
        column[RECORD_VALUES + 1][n] = pair[1];
    }
    result = PyTuple_New(COLUMNS);
    if (result == NULL)
        goto done;
    for (int k = 0; k < COLUMNS; k++) {
        PyObject *item = out[k];
        if (k > 0 && k < RECORD_VALUES && seen[k] == 0) {
            Py_DECREF(item);
            item = Py_NewRef(Py_None);
        }
        out[k] = NULL;
        PyTuple_SET_ITEM(result, k, item);
    }
done:
    for (int k = 0; k < COLUMNS; k++)
        Py_XDECREF(out[k]);
    PyBuffer_Release(&records);
    PyBuffer_Release(&who);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Read a chunk's lines from pos in bulk; see scan.scan_chunk."},
    {"memo", memo_new, METH_NOARGS, "A new memo of looked-up payloads and task prefixes."},
    {"parse_payload", parse_payload, METH_VARARGS, "The C parser of new payloads alone."},
    {"columns", columns, METH_VARARGS, "Packed records and identities as columns; see scan.py."},
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
