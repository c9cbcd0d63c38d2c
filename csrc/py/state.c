/* state.c - the binding's shared state (see state.h). */
#include "state.h"

static npy_state state_storage;
npy_state *npy_st = &state_storage;

/* Set once the exit hook has run: from then on native threads must not
 * take the GIL (the interpreter may be finalizing). */
static volatile int python_gone;

int npy_python_gone(void)
{
    if (__atomic_load_n(&python_gone, __ATOMIC_ACQUIRE))
        return 1;
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

void npy_set_python_gone(void)
{
    __atomic_store_n(&python_gone, 1, __ATOMIC_RELEASE);
}
