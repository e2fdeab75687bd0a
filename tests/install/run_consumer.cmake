# Installs the build into a fresh prefix, then configures, builds and runs the consumer
# project against the installed kdseg package.
#   cmake -DBUILD_DIR=... -DWORK_DIR=... -DCONSUMER_DIR=... -DGENERATOR=... -P run_consumer.cmake
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
# The search path goes through the environment (':'-separated) so that a multi-entry
# CMAKE_PREFIX_PATH of the main build (LibTorch elsewhere) survives argument splitting.
string(REPLACE ";" ":" extra "${EXTRA_PREFIX}")
set(ENV{CMAKE_PREFIX_PATH} "${WORK_DIR}/prefix:${extra}")
step(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/build -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release)
step(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
step(${WORK_DIR}/build/dml_consumer)
