"""Build of the C extension rlhf._core.

The kernels in csrc/ are plain C99; csrc/_core.c is the one file that
includes Python.h and NumPy.  OpenMP is used when the compiler accepts
-fopenmp (probed below); without it the kernels run on one thread and give
the same numbers.  Warnings become errors when RLHF_WERROR=1 (CI sets it); RLHF_SANITIZE=address,undefined
builds with those sanitizers, and RLHF_NO_OPENMP=1 without OpenMP.
"""
import os
import tempfile

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["csrc/_core.c", "csrc/runtime.c", "csrc/logistic.c",
           "csrc/lbfgs.c", "csrc/newton.c", "csrc/reweight.c",
           "csrc/bradley_terry.c", "csrc/constrained.c",
           "csrc/policy_opt.c", "csrc/sequences.c", "csrc/_core_gpt.c",
           "csrc/gpt.c"]


OPENMP_PROBE = ("#include <omp.h>\nint main(void) "
                "{ return omp_get_max_threads() > 0 ? 0 : 1; }\n")


def compiler_accepts(compiler, flags, program=OPENMP_PROBE):
    """Whether the compiler builds and links a tiny program (by default one
    that uses OpenMP) with flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write(program)
        try:
            objects = compiler.compile([src], output_dir=tmp,
                                       extra_postargs=flags)
            compiler.link_executable(objects, "probe", output_dir=tmp,
                                     extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        flags = []
        link = []
        if self.compiler.compiler_type == "unix":
            # -fno-math-errno lets sqrt vectorise; the dynamic cost model
            # (that of -O3) vectorises loops over short rows, which -O2's
            # leaves scalar for their epilogue.  Neither changes a result:
            # floating-point operations are not reordered.  No fused
            # multiply-add either: GCC's -std=c99 implies -ffp-contract=off,
            # clang (macOS) needs it said, or arm64 builds give other bits.
            flags = ["-std=c99", "-O2", "-fno-math-errno", "-ffp-contract=off",
                     "-Wall", "-Wextra"]
            # GCC only; clang refuses it
            trivial = "int main(void) { return 0; }\n"
            if compiler_accepts(self.compiler,
                                ["-Werror", "-fvect-cost-model=dynamic"],
                                trivial):
                flags.insert(4, "-fvect-cost-model=dynamic")
            if os.environ.get("RLHF_WERROR") == "1":
                flags.append("-Werror")
            if os.environ.get("RLHF_NO_OPENMP") != "1" and compiler_accepts(
                    self.compiler, ["-fopenmp"]):
                flags.append("-fopenmp")
                link.append("-fopenmp")
            sanitize = os.environ.get("RLHF_SANITIZE")
            if sanitize:
                # Python's own CFLAGS carry -fwrapv, which defines signed
                # overflow and so hides it from -fsanitize=undefined
                flags += ["-fsanitize=" + sanitize, "-fno-omit-frame-pointer",
                          "-fno-wrapv", "-O1", "-g"]
                link += ["-fsanitize=" + sanitize]
        elif self.compiler.compiler_type == "msvc":
            flags = ["/O2", "/W3"]
        for ext in self.extensions:
            ext.extra_compile_args = flags
            ext.extra_link_args = link
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "rlhf._core",
            sources=SOURCES,
            include_dirs=[numpy.get_include(), "csrc"],
            depends=["csrc/rlhf.h", "csrc/_core.h", "csrc/fastexp.h", "csrc/numerics.h"],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
