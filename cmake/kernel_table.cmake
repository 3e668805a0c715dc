# ioattn_kernel_library(<library> <archs> <host sources>...): one torch-free shared library exporting only
# the C ABI. cmake/gen_kernels.py writes the kernel table at configure time (pruned by
# IOATTN_HEAD_DIMS and IOATTN_DTYPES); every device source becomes a fat binary through
# cmake/device_compile.py (nvcc or NVRTC, see cmake/cuda_toolchain.cmake) and the fat binaries
# are linked into the library, whose host code is plain C++ with the CUDA runtime linked
# statically. <archs> uses CUDA_ARCHITECTURES syntax: "80-real" gives SASS, "80-virtual" PTX.
# The host sources are the library's own (its launch_fwd), beside the shared ones.
function(ioattn_kernel_library library archs)
  set(target ioattn_${library})
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/generated/${library}")
  set(sass "")
  set(ptx "")
  foreach(arch IN LISTS archs)
    if(arch MATCHES "^([0-9]+a?)-real$")
      list(APPEND sass ${CMAKE_MATCH_1})
    elseif(arch MATCHES "^([0-9]+a?)-virtual$")
      list(APPEND ptx ${CMAKE_MATCH_1})
    else()
      message(FATAL_ERROR "ioattn: arch '${arch}' of ${library}: expected NN-real or NN-virtual")
    endif()
  endforeach()
  string(REPLACE ";" "," sass_csv "${sass}")
  string(REPLACE ";" "," ptx_csv "${ptx}")

  execute_process(
    COMMAND "${Python3_EXECUTABLE}" "${PROJECT_SOURCE_DIR}/cmake/gen_kernels.py"
            --library "${library}" --head-dims "${IOATTN_HEAD_DIMS}" --dtypes "${IOATTN_DTYPES}"
            --sass "${sass_csv}" --ptx "${ptx_csv}" --cuda-version "${IOATTN_CUDA_VERSION}"
            --device-compiler "${IOATTN_DEVICE_COMPILER_USED}" --out "${out_dir}"
    OUTPUT_VARIABLE generated
    RESULT_VARIABLE result
    ERROR_VARIABLE errors)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "ioattn: kernel table generation failed for ${library}:\n${errors}")
  endif()
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               "${PROJECT_SOURCE_DIR}/cmake/gen_kernels.py")

  # Every device source includes (nearly) every kernel header, so any header change rebuilds
  # the device code: coarse, and exact.
  file(GLOB_RECURSE device_headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/*.cuh"
       "${PROJECT_SOURCE_DIR}/src/*.h")
  set(device_flags "")
  foreach(dir IN LISTS IOATTN_CUDA_INCLUDE_DIR)
    list(APPEND device_flags -I "${dir}")
  endforeach()
  foreach(define IN LISTS IOATTN_TUNING_DEFINES)
    list(APPEND device_flags -D "${define}")
  endforeach()
  string(REPLACE "\n" ";" generated "${generated}")
  set(fatbins "")
  set(host_sources "")
  foreach(line IN LISTS generated)
    if(line MATCHES "^device (.+)\\.cu$")
      set(fatbin "${CMAKE_MATCH_1}.fatbin")
      get_filename_component(name "${CMAKE_MATCH_1}" NAME)
      add_custom_command(
        OUTPUT "${fatbin}"
        COMMAND "${Python3_EXECUTABLE}" "${PROJECT_SOURCE_DIR}/cmake/device_compile.py"
                ${IOATTN_DEVICE_COMPILER_ARGS} --source "${CMAKE_MATCH_1}.cu" --output "${fatbin}"
                --sass "${sass_csv}" --ptx "${ptx_csv}" -I "${PROJECT_SOURCE_DIR}/src" ${device_flags}
                --log "${CMAKE_CURRENT_BINARY_DIR}/device_compile_log.jsonl"
        DEPENDS "${CMAKE_MATCH_1}.cu" ${device_headers} "${PROJECT_SOURCE_DIR}/cmake/device_compile.py"
        COMMENT "ioattn ${library}: ${name} (${IOATTN_DEVICE_COMPILER_USED})"
        VERBATIM)
      list(APPEND fatbins "${fatbin}")
    elseif(line MATCHES "^host (.+)$")
      list(APPEND host_sources "${CMAKE_MATCH_1}")
      # kernel_table.cpp .incbin's the fat binaries.
      set_source_files_properties("${CMAKE_MATCH_1}" PROPERTIES OBJECT_DEPENDS "${fatbins}")
    endif()
  endforeach()
  list(LENGTH fatbins n)
  message(STATUS "ioattn: ${library} kernel table: ${n} kernels "
                 "(head dims ${IOATTN_HEAD_DIMS}; dtypes ${IOATTN_DTYPES}; "
                 "SASS ${sass_csv}; PTX ${ptx_csv})")

  add_library(${target} SHARED ${host_sources} ${IOATTN_HOST_SOURCES} ${ARGN})
  target_include_directories(${target} PRIVATE "${PROJECT_SOURCE_DIR}/src"
                                               "${PROJECT_SOURCE_DIR}/src/include")
  target_include_directories(${target} SYSTEM PRIVATE "${IOATTN_CUDA_INCLUDE_DIR}")
  target_compile_definitions(${target} PRIVATE ${IOATTN_TUNING_DEFINES})
  target_compile_features(${target} PRIVATE cxx_std_17)
  target_compile_options(${target} PRIVATE -O2 -Wall)
  target_link_libraries(${target} PRIVATE ioattn::cudart_static)
  target_link_options(${target} PRIVATE
    "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/exports.map"
    "LINKER:--exclude-libs,ALL" "LINKER:--no-undefined")
  set_target_properties(${target} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)
  install(TARGETS ${target} LIBRARY DESTINATION ioattn/lib)
endfunction()
