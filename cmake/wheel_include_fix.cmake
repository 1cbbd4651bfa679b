# The ROS 2 wheels' exported CMake targets name include directories of the machine
# that built them (/opt/python/cp311-cp311/...: Python and numpy headers). Point them
# at this interpreter's headers so a venv build configures without system symlinks.
# Used by scripts/build_msgs.sh as CMAKE_PROJECT_INCLUDE (for any rosidl package); a
# colcon build on a real ROS install never includes this file. The fix runs deferred, at
# the end of the top-level CMakeLists, once find_package() created the imported targets.
function(_wheel_include_fix_apply)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c "import numpy; print(numpy.get_include())"
    OUTPUT_VARIABLE _numpy_include OUTPUT_STRIP_TRAILING_WHITESPACE)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_fixed "")
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^/opt/python/cp[0-9]+-cp[0-9]+/include/python")
        set(_dir "${Python3_INCLUDE_DIRS}")
      elseif(_dir MATCHES "^/opt/python/.*/numpy/_?core/include$")
        set(_dir "${_numpy_include}")
      endif()
      list(APPEND _fixed "${_dir}")
    endforeach()
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _wheel_include_fix_apply)
