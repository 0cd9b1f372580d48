// The wrappers live in include/CCohort.h; this file gives SwiftPM a source to compile.
#include "CCohort.h"
