# ioattn_kernel_table(<library> <out-var>): runs cmake/gen_kernels.py at configure time for one
# kernel library and returns the generated sources. The table is pruned by IOATTN_HEAD_DIMS and
# IOATTN_DTYPES; re-configuring only rewrites files whose content changed.
function(ioattn_kernel_table library sass_archs ptx_archs out_var)
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/generated/${library}")
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" "${PROJECT_SOURCE_DIR}/cmake/gen_kernels.py"
            --library "${library}"
            --head-dims "${IOATTN_HEAD_DIMS}"
            --dtypes "${IOATTN_DTYPES}"
            --sass "${sass_archs}"
            --ptx "${ptx_archs}"
            --cuda-version "${CMAKE_CUDA_COMPILER_VERSION}"
            --out "${out_dir}"
    OUTPUT_VARIABLE generated
    RESULT_VARIABLE result
    ERROR_VARIABLE errors)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "ioattn: kernel table generation failed for ${library}:\n${errors}")
  endif()
  string(REPLACE "\n" ";" generated "${generated}")
  list(FILTER generated EXCLUDE REGEX "^$")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               "${PROJECT_SOURCE_DIR}/cmake/gen_kernels.py")
  list(LENGTH generated n)
  math(EXPR n "${n} - 1")
  message(STATUS "ioattn: ${library} kernel table: ${n} forward kernels "
                 "(head dims ${IOATTN_HEAD_DIMS}; dtypes ${IOATTN_DTYPES})")
  set(${out_var} "${generated}" PARENT_SCOPE)
endfunction()

# ioattn_kernel_library(<library> <cuda-archs> <sources...>): one torch-free shared library
# exporting only the C ABI, with the CUDA runtime linked statically.
function(ioattn_kernel_library library cuda_archs)
  set(target ioattn_${library})
  add_library(${target} SHARED ${ARGN} ${IOATTN_HOST_SOURCES})
  target_include_directories(${target} PRIVATE "${PROJECT_SOURCE_DIR}/src"
                                               "${PROJECT_SOURCE_DIR}/src/include")
  target_compile_features(${target} PRIVATE cxx_std_17 cuda_std_17)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo --expt-relaxed-constexpr>
    $<$<COMPILE_LANGUAGE:CXX>:-O2 -Wall>)
  target_link_libraries(${target} PRIVATE CUDA::cudart_static)
  target_link_options(${target} PRIVATE
    "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/exports.map"
    "LINKER:--exclude-libs,ALL" "LINKER:--no-undefined")
  set_target_properties(${target} PROPERTIES
    CUDA_ARCHITECTURES "${cuda_archs}"
    CUDA_RUNTIME_LIBRARY Static
    CXX_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)
  install(TARGETS ${target} LIBRARY DESTINATION ioattn/lib)
endfunction()
