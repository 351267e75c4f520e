@rem Gradle wrapper launcher for Windows: runs gradle\wrapper\gradle-wrapper.jar, which fetches the Gradle
@rem version named in gradle\wrapper\gradle-wrapper.properties once, then runs it with these arguments.
@rem Needs a JDK 17+ (JAVA_HOME, or java on PATH). JAVA_OPTS and GRADLE_OPTS pass JVM options.
@echo off
setlocal
set DIR=%~dp0
set JAVA_EXE=java.exe
if defined JAVA_HOME set JAVA_EXE=%JAVA_HOME%\bin\java.exe
"%JAVA_EXE%" -version >NUL 2>&1
if errorlevel 1 (
  echo gradlew: cannot run %JAVA_EXE%; install a JDK 17+ and set JAVA_HOME 1>&2
  exit /b 1
)
"%JAVA_EXE%" %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%DIR%gradle\wrapper\gradle-wrapper.jar" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
