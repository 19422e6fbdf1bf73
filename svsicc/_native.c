/* The colour stage's gather: out[i] = table[pixel[i] & 0xFFFFFF] over packed 32-bit pixels.
 *
 * numpy's take does the same work but needs the index as a separate intp array (a mask pass and
 * 8 bytes per pixel of extra traffic) and cannot prefetch. The table is 64 MiB and a tissue tile
 * touches ~15-25 thousand of its cache lines, so the gather waits on memory; prefetching a few
 * dozen pixels ahead keeps several of those misses in flight.
 *
 * Only the buffer protocol is used (no numpy headers): the build needs nothing but a C compiler.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define TABLE_ENTRIES (1u << 24)
#define INDEX_MASK 0xFFFFFFu
#define PREFETCH_AHEAD 32

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)0)
#endif

static void gather(const uint32_t *table, const uint32_t *pixels, uint32_t *out, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + PREFETCH_AHEAD < n; i++) {
        PREFETCH(table + (pixels[i + PREFETCH_AHEAD] & INDEX_MASK));
        out[i] = table[pixels[i] & INDEX_MASK];
    }
    for (; i < n; i++)
        out[i] = table[pixels[i] & INDEX_MASK];
}

static int word_buffer(PyObject *obj, Py_buffer *view, int writable, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->len % 4 != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of 32-bit words",
                     name, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *apply_table(PyObject *self, PyObject *args)
{
    PyObject *table_obj, *pixels_obj, *out_obj;
    Py_buffer table, pixels, out;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO:apply_table", &table_obj, &pixels_obj, &out_obj))
        return NULL;
    if (word_buffer(table_obj, &table, 0, "table") < 0)
        return NULL;
    if (table.len != (Py_ssize_t)TABLE_ENTRIES * 4) {
        PyErr_Format(PyExc_ValueError, "table: %zd bytes, expected 2**24 32-bit words", table.len);
        PyBuffer_Release(&table);
        return NULL;
    }
    if (word_buffer(pixels_obj, &pixels, 0, "pixels") < 0) {
        PyBuffer_Release(&table);
        return NULL;
    }
    if (word_buffer(out_obj, &out, 1, "out") < 0) {
        PyBuffer_Release(&pixels);
        PyBuffer_Release(&table);
        return NULL;
    }
    if (out.len != pixels.len) {
        PyErr_Format(PyExc_ValueError, "out: %zd bytes, pixels: %zd bytes", out.len, pixels.len);
    } else {
        /* out may be pixels itself: each word is read before it is written. */
        Py_BEGIN_ALLOW_THREADS
        gather((const uint32_t *)table.buf, (const uint32_t *)pixels.buf, (uint32_t *)out.buf,
               pixels.len / 4);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&pixels);
    PyBuffer_Release(&table);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"apply_table", apply_table, METH_VARARGS,
     "apply_table(table, pixels, out): out[i] = table[pixels[i] & 0xFFFFFF] over 32-bit words;\n"
     "table holds 2**24 words; out may be pixels (in place). Releases the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "svsicc._native", "Native inner loops for svsicc.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
