# ioattn_find_cuda(): the CUDA pieces a kernel library needs, from one of two toolchains.
#
#   nvcc   a CUDA toolkit (nvcc on PATH or CUDACXX): device code with `nvcc -fatbin`, the
#          toolkit's headers and static runtime.
#   nvrtc  the PyPI CUDA packages installed into IOATTN_CUDA_PIP_ROOT (pip install --target):
#          NVRTC + nvFatbin for device code, the runtime package's headers and static runtime.
#          The CUDA 12 wheels are built this way (the PyPI nvidia-cuda-nvcc-cu12 has no nvcc).
#
# IOATTN_DEVICE_COMPILER=auto takes nvcc when found, else nvrtc when IOATTN_CUDA_PIP_ROOT is set.
# Sets IOATTN_CUDA_FOUND, IOATTN_DEVICE_COMPILER_USED, IOATTN_CUDA_VERSION,
# IOATTN_CUDA_INCLUDE_DIR, IOATTN_DEVICE_COMPILER_ARGS (for cmake/device_compile.py) and the
# imported target ioattn::cudart_static.
function(ioattn_find_cuda)
  set(IOATTN_CUDA_FOUND FALSE PARENT_SCOPE)
  set(compiler "${IOATTN_DEVICE_COMPILER}")
  if(NOT "$ENV{CUDACXX}" STREQUAL "" AND NOT IOATTN_NVCC)
    set(IOATTN_NVCC "$ENV{CUDACXX}" CACHE FILEPATH "nvcc")
  endif()
  if(compiler STREQUAL "auto")
    find_program(IOATTN_NVCC NAMES nvcc PATHS /usr/local/cuda/bin)
    if(IOATTN_NVCC)
      set(compiler nvcc)
    elseif(IOATTN_CUDA_PIP_ROOT)
      set(compiler nvrtc)
    else()
      message(WARNING "ioattn: no CUDA compiler found (no nvcc, no IOATTN_CUDA_PIP_ROOT): "
                      "building the reference backend only (the package installs, but CUDA "
                      "tensors have no kernel to run on)")
      return()
    endif()
  endif()

  if(compiler STREQUAL "nvcc")
    find_program(IOATTN_NVCC NAMES nvcc PATHS /usr/local/cuda/bin REQUIRED)
    get_filename_component(nvcc_dir "${IOATTN_NVCC}" REALPATH)
    get_filename_component(nvcc_dir "${nvcc_dir}" DIRECTORY)
    set(CUDAToolkit_ROOT "${nvcc_dir}/..")
    find_package(CUDAToolkit REQUIRED)
    set(version "${CUDAToolkit_VERSION_MAJOR}.${CUDAToolkit_VERSION_MINOR}")
    list(GET CUDAToolkit_INCLUDE_DIRS 0 include_dir)
    set(args --compiler nvcc --nvcc "${IOATTN_NVCC}")
    add_library(ioattn_cudart INTERFACE)
    target_link_libraries(ioattn_cudart INTERFACE CUDA::cudart_static)
  elseif(compiler STREQUAL "nvrtc")
    if(NOT IOATTN_CUDA_PIP_ROOT)
      message(FATAL_ERROR "ioattn: IOATTN_DEVICE_COMPILER=nvrtc needs IOATTN_CUDA_PIP_ROOT")
    endif()
    set(root "${IOATTN_CUDA_PIP_ROOT}/nvidia")
    # The host headers need crt/host_defines.h, which ships with the compiler package
    # (nvidia-cuda-crt for CUDA 13, nvidia-cuda-nvcc-cu12 for CUDA 12).
    if(EXISTS "${root}/cu13/include/cuda_runtime_api.h")  # CUDA 13 packages: one prefix
      set(include_dir "${root}/cu13/include")
      set(crt_dir "${root}/cu13/include")
      set(cudart "${root}/cu13/lib/libcudart_static.a")
      file(GLOB nvrtc "${root}/cu13/lib/libnvrtc.so.*")
      file(GLOB nvfatbin "${root}/cu13/lib/libnvfatbin.so.*")
    else()  # CUDA 12 packages: one prefix per component
      set(include_dir "${root}/cuda_runtime/include")
      set(crt_dir "${root}/cuda_nvcc/include")
      set(cudart "${root}/cuda_runtime/lib/libcudart_static.a")
      file(GLOB nvrtc "${root}/cuda_nvrtc/lib/libnvrtc.so.*")
      file(GLOB nvfatbin "${root}/nvfatbin/lib/libnvfatbin.so.*")
    endif()
    list(FILTER nvrtc EXCLUDE REGEX "\\.alt\\.")
    foreach(need include_dir crt_dir cudart nvrtc nvfatbin)
      if(NOT ${need} OR NOT EXISTS "${${need}}" OR NOT EXISTS "${crt_dir}/crt/host_defines.h")
        message(FATAL_ERROR "ioattn: ${need} not found under ${root}: install the NVRTC, "
                            "nvFatbin, runtime and crt/nvcc packages there (noxfile.py, "
                            "ci/install_cuda.sh)")
      endif()
    endforeach()
    list(APPEND include_dir "${crt_dir}")
    set(args --compiler nvrtc --nvrtc "${nvrtc}" --nvfatbin "${nvfatbin}")
    execute_process(COMMAND "${Python3_EXECUTABLE}" "${PROJECT_SOURCE_DIR}/cmake/device_compile.py"
                            ${args} --print-version
                    OUTPUT_VARIABLE version OUTPUT_STRIP_TRAILING_WHITESPACE
                    COMMAND_ERROR_IS_FATAL ANY)
    find_package(Threads REQUIRED)
    add_library(ioattn_cudart INTERFACE)
    target_link_libraries(ioattn_cudart INTERFACE "${cudart}" Threads::Threads ${CMAKE_DL_LIBS} rt)
  else()
    message(FATAL_ERROR "ioattn: IOATTN_DEVICE_COMPILER must be auto, nvcc or nvrtc, "
                        "got '${compiler}'")
  endif()
  add_library(ioattn::cudart_static ALIAS ioattn_cudart)
  message(STATUS "ioattn: device compiler ${compiler}, CUDA ${version}")
  set(IOATTN_CUDA_FOUND TRUE PARENT_SCOPE)
  set(IOATTN_DEVICE_COMPILER_USED "${compiler}" PARENT_SCOPE)
  set(IOATTN_CUDA_VERSION "${version}" PARENT_SCOPE)
  set(IOATTN_CUDA_INCLUDE_DIR "${include_dir}" PARENT_SCOPE)
  set(IOATTN_DEVICE_COMPILER_ARGS "${args}" PARENT_SCOPE)
endfunction()
